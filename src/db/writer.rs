//! Group commit for SQLite: one writer thread takes the creates that arrive together and
//! commits them in one transaction, so that one fsync serves many callers.
//!
//! SQLite has a single write lock: several pooled writers only queue on it, each paying its own
//! fsync (`synchronous=FULL`). Here callers queue in a channel instead; the writer drains what is
//! waiting (up to [`MAX_GROUP`]), inserts the creates without a key as one multi-row INSERT and
//! runs each keyed create in its own savepoint, commits once, and only then answers each caller.
//! When the multi-row INSERT fails, nothing of it is kept and its creates run one by one in
//! savepoints too: a create that fails is rolled back alone and the others go on. A failed
//! commit fails the whole group, and nothing of it is stored. The savepoints journal in memory,
//! and the write-ahead log is checkpointed by a thread of its own, so that neither a temporary
//! file nor a checkpoint lengthens the writer's cycle (`bench/run`: SQLite creates at 64
//! connections went from about 8,100/s to 9,800–11,400/s with both).

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;

use diesel::SqliteConnection;
use tokio::sync::{mpsc, oneshot};

use super::DbConn;
use super::DbError;
use super::events::{self, NewEvent};
use super::opportunity::{CreateOutcome, IdempotencyRecord, create_sqlite, insert_sqlite_batch};
use crate::domain::opportunity::Opportunity;

/// The most creates committed in one transaction.
pub const MAX_GROUP: usize = 512;
/// Creates waiting for the writer before callers wait to enqueue.
const QUEUE: usize = 4096;

struct Job {
    /// A job still queued at its deadline is answered SERVICE_UNAVAILABLE and never run, and a
    /// group is rolled back whole rather than committed past the earliest deadline of its jobs:
    /// a caller waits at most about the database timeout, and is never told "unavailable" about
    /// a write that is then stored.
    deadline: Instant,
    work: Work,
}

#[allow(clippy::large_enum_variant)] // a create is the common job; boxing it would cost each one an allocation
enum Work {
    Create {
        opportunity: Opportunity,
        key: Option<IdempotencyRecord>,
        /// Appended, in the group's transaction, when the create is stored.
        event: NewEvent,
        reply: oneshot::Sender<Result<CreateOutcome, DbError>>,
    },
    /// Any other write (an update, archive, restore), run in a savepoint of the group; what it
    /// returns answers its caller once the group's commit is known.
    Run(Write),
}

/// A write of [`Work::Run`].
type Write = Box<dyn FnOnce(&mut SqliteConnection) -> Answer + Send>;

/// Answers a caller of [`SqliteWriter::run`] with the group's commit failure, if any.
type Answer = Box<dyn FnOnce(Option<&DbError>) + Send>;

/// The handle callers enqueue creates with; the writer thread ends when the last handle is
/// dropped, after finishing what was queued.
#[derive(Debug, Clone)]
pub struct SqliteWriter {
    jobs: mpsc::Sender<Job>,
    timeout: Duration,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.work {
            Work::Create { opportunity, .. } => f.debug_struct("Create").field("id", &opportunity.id).finish(),
            Work::Run(_) => f.write_str("Run"),
        }
    }
}

impl SqliteWriter {
    /// Starts the writer thread on its own connection to `path`. A create waits at most
    /// `timeout` in all: in the queue and for SQLite's write lock (held by another process).
    pub fn start(path: &Path, timeout: Duration) -> anyhow::Result<Self> {
        let mut conn = super::establish_sqlite(path)?;
        // The savepoints of a group journal the pages they change; in memory, not in a temporary
        // file (the writer only inserts and changes rows by key: it makes no large sorts).
        // Checkpoints are the checkpointer's, off the writer's path.
        // The page cache keeps SQLite's default size (2 MiB). A 64 MiB cache was tried: the
        // truncation SQLite runs at each commit (`pcache1TruncateUnsafe`) walked its hash table
        // for about 9% of the writer's time under creates, 2% under updates, while the reads it
        // saved were under 1% (`perf record` under `bench/run`).
        conn.batch_execute("PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 0;")?;
        let checkpoints = start_checkpointer(path)?;
        let (jobs, mut queue) = mpsc::channel::<Job>(QUEUE);
        thread::Builder::new().name("sqlite-writer".into()).spawn(move || {
            let mut group = Vec::with_capacity(MAX_GROUP);
            while let Some(first) = queue.blocking_recv() {
                group.push(first);
                while group.len() < MAX_GROUP {
                    match queue.try_recv() {
                        Ok(job) => group.push(job),
                        Err(_) => break,
                    }
                }
                refuse_expired(&mut group, Instant::now());
                if !group.is_empty() {
                    commit_group(&mut conn, &mut group);
                    // Full: a checkpoint is asked for already.
                    let _ = checkpoints.try_send(());
                }
            }
        })?;
        Ok(Self { jobs, timeout })
    }

    /// Writes waiting for the writer thread (sent, not yet taken into a group).
    pub fn queued(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }

    /// Stores one opportunity (with its idempotency key) and answers once it is committed.
    pub async fn create(
        &self,
        opportunity: Opportunity,
        key: Option<IdempotencyRecord>,
        event: NewEvent,
    ) -> Result<CreateOutcome, DbError> {
        let (reply, answer) = oneshot::channel();
        let work = Work::Create { opportunity, key, event, reply };
        self.jobs
            .send(Job { deadline: super::write_deadline(Instant::now() + self.timeout), work })
            .await
            .map_err(|_| DbError::Unavailable("the SQLite writer has stopped".into()))?;
        answer.await.map_err(|_| DbError::Unavailable("the SQLite writer stopped before answering".into()))?
    }

    /// Runs a write in the next group (in a savepoint of its transaction) and answers once the
    /// group is committed: changes get group commit as creates do. Past `deadline` it is not
    /// started, and a group holding it is not committed.
    pub async fn run<R, F>(&self, deadline: Instant, write: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<R, DbError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let work = Work::Run(Box::new(move |conn| {
            let result = write(conn);
            Box::new(move |commit: Option<&DbError>| {
                let _ = reply.send(match commit {
                    Some(e) => Err(super::copy_error(e)),
                    None => result,
                });
            })
        }));
        let deadline = super::write_deadline(deadline);
        self.jobs
            .send(Job { deadline, work })
            .await
            .map_err(|_| DbError::Unavailable("the SQLite writer has stopped".into()))?;
        // A job dropped unrun (its deadline passed in the queue) drops its reply.
        answer.await.map_err(|_| DbError::Unavailable("waited too long for the SQLite writer".into()))?
    }
}

/// How often at most the checkpointer copies the write-ahead log into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Starts the thread that checkpoints the write-ahead log after the writer's commits, on its own
/// connection: at most every [`CHECKPOINT_EVERY`], never when nothing was written. A PASSIVE
/// checkpoint copies what no reader still needs and never waits for the writer, so the writer
/// never pays for it (SQLite's automatic checkpoint, off on the writer's connection, would run
/// inside a commit). The thread ends with the writer.
fn start_checkpointer(path: &Path) -> anyhow::Result<std::sync::mpsc::SyncSender<()>> {
    let mut conn = super::establish_sqlite(path)?;
    let (asks, asked) = std::sync::mpsc::sync_channel::<()>(1);
    thread::Builder::new().name("sqlite-checkpointer".into()).spawn(move || {
        while asked.recv().is_ok() {
            if let Err(e) = conn.batch_execute("PRAGMA wal_checkpoint(PASSIVE);") {
                tracing::warn!(error = %e, "a SQLite checkpoint failed; the next commit asks again");
            }
            thread::sleep(CHECKPOINT_EVERY);
        }
    })?;
    Ok(asks)
}

/// Answers SERVICE_UNAVAILABLE to the jobs of `group` whose deadline has passed and takes them
/// out: they are never run.
fn refuse_expired(group: &mut Vec<Job>, now: Instant) {
    for job in group.extract_if(.., |job| job.deadline <= now) {
        if let Work::Create { reply, .. } = job.work {
            let _ = reply.send(Err(DbError::Unavailable("waited too long for the SQLite writer".into())));
        }
    }
}

/// Commits a group and answers every job of it; `group` is left empty.
fn commit_group(conn: &mut SqliteConnection, group: &mut Vec<Job>) {
    let size = group.len();
    let deadline = group.iter().map(|job| job.deadline).min().expect("a group is never empty");
    let mut outcomes: Vec<Option<Result<CreateOutcome, DbError>>> = Vec::with_capacity(size);
    let mut answers: Vec<Answer> = Vec::new();
    let mut runs: Vec<Write> = Vec::new();
    let mut creates = Vec::with_capacity(size);
    for job in group.drain(..) {
        match job.work {
            Work::Create { opportunity, key, event, reply } => creates.push((opportunity, key, event, reply)),
            Work::Run(run) => runs.push(run),
        }
    }
    // Wait for SQLite's write lock (another process may hold it) until the earliest deadline.
    let wait = deadline.saturating_duration_since(Instant::now()).as_millis().clamp(1, i32::MAX as u128);
    if let Err(e) = conn.batch_execute(&format!("PRAGMA busy_timeout = {wait};")) {
        tracing::warn!(error = %e, "cannot set the SQLite writer's busy timeout");
    }
    let committed = conn.immediate_transaction(|conn| {
        // The creates without a key go in as one INSERT; when it fails (nothing of it is kept),
        // each goes alone, as the keyed ones do.
        let keyless: Vec<&Opportunity> = creates.iter().filter(|c| c.1.is_none()).map(|c| &c.0).collect();
        let batched = keyless.len() > 1 && insert_sqlite_batch(conn, &keyless).is_ok();
        for (opportunity, key, _, _) in &creates {
            if batched && key.is_none() {
                outcomes.push(Some(Ok(CreateOutcome::Created)));
                continue;
            }
            // `create_sqlite` runs in a savepoint: its failure is its own.
            outcomes.push(Some(create_sqlite(conn, opportunity, key.as_ref()).map_err(DbError::classify)));
        }
        // The events of what was stored: no create without its event, no event without its
        // create (a failure here fails the whole group).
        let created: Vec<NewEvent> = creates
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| matches!(outcome, Some(Ok(CreateOutcome::Created))))
            .map(|(c, _)| c.2.clone())
            .collect();
        events::append(&mut DbConn::Sqlite(conn), created)?;
        // Then the other writes, each in its own savepoint (and with its own events).
        for run in runs.drain(..) {
            answers.push(run(conn));
        }
        // Past the earliest deadline a caller is about to give up: store nothing of the group.
        if Instant::now() >= deadline {
            return Err(diesel::result::Error::RollbackTransaction);
        }
        Ok::<_, diesel::result::Error>(())
    });
    let failure = committed.err().map(|e| match e {
        diesel::result::Error::RollbackTransaction => {
            DbError::Unavailable("the database did not answer before the deadline".into())
        }
        e => {
            tracing::warn!(error = %e, size, "a group commit failed; none of its writes is stored");
            DbError::classify(e)
        }
    });
    tracing::trace!(size, "group committed");
    let outcomes = outcomes.into_iter().chain(std::iter::repeat_with(|| None));
    for ((_, _, _, reply), outcome) in creates.into_iter().zip(outcomes) {
        // A caller that went away (timeout, closed connection) no longer needs the answer.
        let outcome = match &failure {
            Some(e) => Err(super::copy_error(e)),
            None => outcome.expect("an outcome per create"),
        };
        let _ = reply.send(outcome);
    }
    for answer in answers {
        answer(failure.as_ref());
    }
}

// Grouping, savepoints and the fallback are tested through `Database::create_opportunity` on
// both backends (tests/api/group_commit.rs); the deadline rule here, where a test can set it.
#[cfg(test)]
mod tests {
    use chrono::Utc;
    use uuid::Uuid;

    use super::*;
    use crate::domain::opportunity::{CreateOpportunity, PipelineType};

    fn job(deadline: Instant) -> (Job, oneshot::Receiver<Result<CreateOutcome, DbError>>) {
        let input = CreateOpportunity {
            customer_id: Some(Uuid::now_v7()),
            title: Some("queued".into()),
            pipeline_type: Some(PipelineType::Retrofit),
            ..Default::default()
        };
        let opportunity = Opportunity::new(input, Uuid::nil(), Uuid::nil(), Utc::now()).unwrap();
        let (reply, answer) = oneshot::channel();
        let event = NewEvent::created(&opportunity, "{}".into());
        (Job { deadline, work: Work::Create { opportunity, key: None, event, reply } }, answer)
    }

    #[test]
    fn jobs_past_their_deadline_are_refused_and_never_run() {
        let now = Instant::now();
        let (late, mut late_answer) = job(now - Duration::from_millis(1));
        let (due, mut due_answer) = job(now);
        let (live, mut live_answer) = job(now + Duration::from_secs(1));
        let mut group = vec![late, live, due];
        refuse_expired(&mut group, now);
        assert_eq!(group.len(), 1, "only the job still in time stays in the group");
        assert!(matches!(late_answer.try_recv(), Ok(Err(DbError::Unavailable(_)))));
        assert!(matches!(due_answer.try_recv(), Ok(Err(DbError::Unavailable(_)))));
        assert!(live_answer.try_recv().is_err(), "the job in time is not answered yet");
    }
}

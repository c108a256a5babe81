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
//! connections went from about 8,100/s to 9,800–11,400/s with both). Only when that thread
//! cannot keep up does the writer checkpoint the whole log itself, between two groups, so that
//! the log stays within [`WAL_LIMIT`]; once writes pause, that thread cuts a long log back.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
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

/// How much of the database file the writer reads through a memory map rather than with a
/// read call per page (`PRAGMA mmap_size`): SQLite's own upper bound on Linux, 2 GiB less 64 KiB.
/// The writer reads the pages its changes land in, scattered over a large file; with the map it
/// neither copies them nor makes a system call for each (writes still go through the
/// write-ahead log, never through the map). Measured with `bench/run`'s seed (1,000,000
/// opportunities) and its wrk scripts, the two binaries alternating, 10 s at 32 connections:
/// updates 3,653 and 2,892 a second without the map, 3,944 and 3,518 with it; creates 7,564
/// and 8,116 against 7,982 and 8,827; 7% less service CPU per update. The pages it touches
/// count in the process's resident set as file pages (the kernel's page cache, which it may
/// drop), up to the size of the file.
const WRITER_MMAP: u64 = 0x7fff_0000;

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
        Self::start_with(
            path,
            timeout,
            LogLimits { bound: WAL_LIMIT, idle_keep: WAL_IDLE_KEEP, idle_after: IDLE_AFTER, free_space },
        )
    }

    /// [`SqliteWriter::start`] with other limits on the write-ahead log (tests use small ones).
    fn start_with(path: &Path, timeout: Duration, limits: LogLimits) -> anyhow::Result<Self> {
        let mut conn = super::establish_sqlite(path)?;
        // The savepoints of a group journal the pages they change; in memory, not in a temporary
        // file (the writer only inserts and changes rows by key: it makes no large sorts).
        // Checkpoints are the checkpointer's, off the writer's path.
        // The page cache keeps SQLite's default size (2 MiB). A 64 MiB cache was tried: the
        // truncation SQLite runs at each commit (`pcache1TruncateUnsafe`) walked its hash table
        // for about 9% of the writer's time under creates, 2% under updates, while the reads it
        // saved were under 1% (`perf record` under `bench/run`).
        // A log that was restarted is cut back to the bound (SQLite does so when it writes the
        // log from its start again). Reads go through the memory map of `WRITER_MMAP`.
        conn.batch_execute(&format!(
            "PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = {}; PRAGMA mmap_size = {WRITER_MMAP};",
            limits.bound
        ))?;
        let checkpointing = Arc::new(Mutex::new(()));
        let checkpoints = start_checkpointer(path, checkpointing.clone(), limits)?;
        let mut bound = LogBound { wal: wal_path(path), limits, checkpointing, next_restart: Instant::now() };
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
                    if !bound.keep(&mut conn) {
                        // Full: a checkpoint is asked for already.
                        let _ = checkpoints.try_send(());
                    }
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

/// The size the write-ahead log may reach before the writer stops to checkpoint it whole.
///
/// The checkpointer's PASSIVE checkpoints copy what was committed before they began; under a
/// steady stream of commits there is always more, the log is never written from its start again,
/// and it grew by about 100 MB a second under `bench/run`'s creates (1.7 GB after 20 s). Past
/// this size the writer, between two groups, checkpoints with RESTART: it copies what is left,
/// waits for the reads still using the log, and the next group writes the log from its start.
/// The writer is then stopped for that checkpoint (the callers waiting keep their deadlines):
/// 15–70 ms, whatever the bound, for what was committed since the checkpointer's last pass.
/// The bound sets how often that happens under a steady stream of writes: with 64 MiB it was
/// 2.7 times a second under `bench/run`'s creates at 32 connections and 1.7 times under its
/// updates, enough for the pauses to make the p99 (31–33 ms and 44–48 ms); with 1 GiB it is
/// every 6 to 10 seconds, and the p99 was 13 and 16–18 ms. 256 MiB still left 35–38 ms under
/// updates. The file keeps its size once written (rewriting it is cheaper than growing it:
/// cutting it back at each restart made the updates' p99 72–211 ms), until writes pause
/// ([`IDLE_AFTER`]). On a disk with less than 4 GiB left, the bound is a quarter of the room
/// the log and the free space add up to, and at least [`WAL_IDLE_KEEP`] ([`log_bound`]).
const WAL_LIMIT: u64 = 1 << 30;

/// The bound of a log of `log` bytes on a file system with `free` bytes left: `limit`, or a
/// quarter of the space the log and what is left could take, when that is less; never below
/// `floor` (the bound before 1 GiB). On a disk with little room, a long log would take the room
/// the database itself needs, and writes would fail sooner than with a short one.
fn log_bound(limit: u64, floor: u64, log: u64, free: Option<u64>) -> u64 {
    match free {
        Some(free) => limit.min(free.saturating_add(log) / 4).max(floor.min(limit)),
        None => limit,
    }
}

/// Bytes left for this process on the file system that holds `path`, when it can be read.
fn free_space(path: &Path) -> Option<u64> {
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// The size a write-ahead log is left at once writes pause: a longer one is checkpointed and
/// cut to nothing ([`IDLE_AFTER`]), so that the disk a burst of writes took is given back.
const WAL_IDLE_KEEP: u64 = 64 << 20;

/// How long without a commit before the checkpointer cuts a long log back. A log cut back
/// grows again by extending its file, and each commit's sync then also writes the file's new
/// size (cutting it at each restart made the p99 72–211 ms, see [`WAL_LIMIT`]); a minute keeps
/// it across the short pauses of a busy service.
const IDLE_AFTER: Duration = Duration::from_secs(60);

/// The write-ahead log's limits (see [`WAL_LIMIT`], [`WAL_IDLE_KEEP`], [`IDLE_AFTER`]). The
/// idle size is also the bound's floor, however little room is left ([`log_bound`]).
#[derive(Debug, Clone, Copy)]
struct LogLimits {
    bound: u64,
    idle_keep: u64,
    idle_after: Duration,
    /// Bytes left on the file system of a path ([`free_space`]; tests make the disk fill up).
    free_space: fn(&Path) -> Option<u64>,
}

/// The write-ahead log of the database at `path`.
fn wal_path(path: &Path) -> std::path::PathBuf {
    let mut log = path.as_os_str().to_owned();
    log.push("-wal");
    log.into()
}

/// The writer's side of the log's bound ([`WAL_LIMIT`]).
struct LogBound {
    wal: std::path::PathBuf,
    limits: LogLimits,
    /// Held by the checkpointer while it checkpoints.
    checkpointing: Arc<Mutex<()>>,
    /// No checkpoint of the whole log before then (after one that could not finish).
    next_restart: Instant,
}

impl LogBound {
    /// Checkpoints the whole log when it is past its bound and the checkpointer is not at work.
    /// Returns whether the log was past its bound (then the checkpointer need not be asked).
    fn keep(&mut self, conn: &mut SqliteConnection) -> bool {
        if Instant::now() < self.next_restart {
            return false;
        }
        let Ok(log) = std::fs::metadata(&self.wal).map(|log| log.len()) else { return false };
        // Within the floor, no need to ask how much room the disk has left.
        let LogLimits { bound, idle_keep: floor, free_space, .. } = self.limits;
        if log <= bound.min(floor) {
            return false;
        }
        let bound = log_bound(bound, floor, log, free_space(&self.wal));
        if log <= bound {
            return false;
        }
        // While the checkpointer is at work, SQLite would make the writer wait for it in sleeps
        // of up to 100 ms: try again after the next group. Held, the lock keeps it from starting.
        let _alone = match self.checkpointing.try_lock() {
            Ok(alone) => alone,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return true,
        };
        // SQLite cuts the file to this size at the first commit of the log started again: on a
        // disk with little room the bound is below the size the file reached, and the file's
        // size, which is what the bound is checked on, must come back under it (or every group
        // would checkpoint the whole log).
        if let Err(e) = conn.batch_execute(&format!("PRAGMA journal_size_limit = {bound};")) {
            tracing::warn!(error = %e, "the write-ahead log's size limit could not be set");
        }
        if !restart_log(conn) {
            self.next_restart = Instant::now() + RESTART_BACKOFF;
        }
        true
    }
}

/// How long the writer waits at most, in a checkpoint of the whole log, for the reads still in
/// it (reads by id and pages of a list take milliseconds).
const RESTART_WAIT: Duration = Duration::from_millis(200);
/// After a checkpoint of the whole log that could not finish (a read held the log past
/// [`RESTART_WAIT`]), how long the writer goes on before it tries again.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);

#[derive(diesel::QueryableByName)]
struct CheckpointResult {
    /// 1 when the checkpoint could not finish: a reader or another checkpoint was in the way.
    #[diesel(sql_type = diesel::sql_types::Integer)]
    busy: i32,
}

/// Checkpoints the whole write-ahead log on the writer's connection and waits (at most
/// [`RESTART_WAIT`]) for the reads still in it, so that the next commit writes the log from its
/// start. Returns whether it finished.
fn restart_log(conn: &mut SqliteConnection) -> bool {
    use diesel::RunQueryDsl;
    let started = Instant::now();
    let wait = RESTART_WAIT.as_millis();
    let result = conn
        .batch_execute(&format!("PRAGMA busy_timeout = {wait};"))
        .and_then(|()| diesel::sql_query("PRAGMA wal_checkpoint(RESTART)").get_result::<CheckpointResult>(conn));
    let ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(CheckpointResult { busy: 0 }) => {
            tracing::debug!(ms, "the write-ahead log was checkpointed whole");
            true
        }
        Ok(_) => {
            tracing::warn!(ms, "a read held the write-ahead log; its checkpoint is tried again in a second");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "a checkpoint of the whole write-ahead log failed; tried again in a second");
            false
        }
    }
}

/// How often at most the checkpointer copies the write-ahead log into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Starts the thread that checkpoints the write-ahead log after the writer's commits, on its own
/// connection: at most every [`CHECKPOINT_EVERY`], never when nothing was written. A PASSIVE
/// checkpoint copies what no reader still needs and never waits for the writer, so the writer
/// never pays for it (SQLite's automatic checkpoint, off on the writer's connection, would run
/// inside a commit). It holds `checkpointing` while it checkpoints. After `limits.idle_after`
/// without a commit, it cuts a log longer than `limits.idle_keep` to nothing (TRUNCATE). The
/// thread ends with the writer.
fn start_checkpointer(
    path: &Path,
    checkpointing: Arc<Mutex<()>>,
    limits: LogLimits,
) -> anyhow::Result<std::sync::mpsc::SyncSender<()>> {
    use std::sync::mpsc::RecvTimeoutError;
    let mut conn = super::establish_sqlite(path)?;
    let database = std::fs::File::open(path)?;
    let wal = wal_path(path);
    let (asks, asked) = std::sync::mpsc::sync_channel::<()>(1);
    thread::Builder::new().name("sqlite-checkpointer".into()).spawn(move || {
        loop {
            match asked.recv_timeout(limits.idle_after) {
                Ok(()) => {}
                Err(RecvTimeoutError::Timeout) => {
                    if std::fs::metadata(&wal).is_ok_and(|log| log.len() > limits.idle_keep) {
                        let _working = checkpointing.lock().unwrap_or_else(PoisonError::into_inner);
                        truncate_log(&mut conn);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let working = checkpointing.lock().unwrap_or_else(PoisonError::into_inner);
            if let Err(e) = conn.batch_execute("PRAGMA wal_checkpoint(PASSIVE);") {
                tracing::warn!(error = %e, "a SQLite checkpoint failed; the next commit asks again");
            }
            // SQLite syncs the database file only after a checkpoint that copied the whole log,
            // which a PASSIVE one under steady writes never does: the pages it copies would wait
            // in the page cache for the writer's checkpoint of the whole log, whose sync then
            // wrote them all while every caller waited (about 90 ms, twice a second, under
            // `bench/run`'s updates). Synced here, off the writer's path, they are on disk by
            // then. Syncing sooner only moves the work; what SQLite syncs stays synced.
            if let Err(e) = database.sync_data() {
                tracing::warn!(error = %e, "syncing the SQLite database file failed; the next checkpoint syncs again");
            }
            drop(working);
            thread::sleep(CHECKPOINT_EVERY);
        }
    })?;
    Ok(asks)
}

/// Checkpoints the whole log and cuts the file to nothing, when no write and no read is in
/// its way: it waits for neither (a write arriving meanwhile waits for it, as for any
/// checkpoint of the whole log). A log that could not be cut is tried again after the next
/// pause in the writes.
fn truncate_log(conn: &mut SqliteConnection) {
    use diesel::RunQueryDsl;
    let started = Instant::now();
    let result = conn
        .batch_execute("PRAGMA busy_timeout = 0;")
        .and_then(|()| diesel::sql_query("PRAGMA wal_checkpoint(TRUNCATE)").get_result::<CheckpointResult>(conn));
    let ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(CheckpointResult { busy: 0 }) => tracing::debug!(ms, "writes paused: the write-ahead log was cut back"),
        Ok(_) => tracing::debug!(ms, "writes paused, but a read or a write held the write-ahead log; cut back later"),
        Err(e) => tracing::warn!(error = %e, "cutting back the write-ahead log failed; tried again when writes pause"),
    }
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

    /// A valid opportunity to create, with its event.
    fn new_create() -> (Opportunity, NewEvent) {
        let input = CreateOpportunity {
            customer_id: Some(Uuid::now_v7()),
            title: Some("queued".into()),
            pipeline_type: Some(PipelineType::Retrofit),
            ..Default::default()
        };
        let opportunity = Opportunity::new(input, Uuid::nil(), Uuid::nil(), Utc::now()).unwrap();
        let event = NewEvent::created(&opportunity, "{}".into());
        (opportunity, event)
    }

    fn job(deadline: Instant) -> (Job, oneshot::Receiver<Result<CreateOutcome, DbError>>) {
        let (opportunity, event) = new_create();
        let (reply, answer) = oneshot::channel();
        (Job { deadline, work: Work::Create { opportunity, key: None, event, reply } }, answer)
    }

    /// The log's bound in these tests: 1 MiB.
    const LIMIT: u64 = 1 << 20;
    /// The size a log is cut from once writes pause, in these tests.
    const IDLE_KEEP: u64 = 256 << 10;

    /// A new, migrated file with a writer whose log is bound to [`LIMIT`], and a `Database` on
    /// the same file to read back what it stored.
    struct Bounded {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        wal: std::path::PathBuf,
        db: crate::db::Database,
        writer: SqliteWriter,
    }

    impl Bounded {
        fn new() -> Self {
            Self::with_free_space(free_space)
        }

        /// [`Bounded::new`] on a disk whose room left `free_space` tells.
        fn with_free_space(free_space: fn(&Path) -> Option<u64>) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.db");
            let url = crate::db::DatabaseUrl::Sqlite(path.clone());
            let options = crate::db::PoolOptions { size: Some(2), timeout: Duration::from_secs(5) };
            let db = crate::db::Database::connect(url, options).unwrap(); // migrates the file
            let idle_after = Duration::from_millis(500);
            let limits = LogLimits { bound: LIMIT, idle_keep: IDLE_KEEP, idle_after, free_space };
            let writer = SqliteWriter::start_with(&path, Duration::from_secs(5), limits).unwrap();
            Self { wal: wal_path(&path), _dir: dir, path, db, writer }
        }

        fn log_size(&self) -> u64 {
            std::fs::metadata(&self.wal).unwrap().len()
        }

        /// Sends 32 creates at once, waits for them all to be stored, and answers their ids.
        async fn write_group(&self) -> Vec<Uuid> {
            let creates: Vec<_> = (0..32)
                .map(|_| {
                    let (opportunity, event) = new_create();
                    let id = opportunity.id;
                    let writer = self.writer.clone();
                    (id, tokio::spawn(async move { writer.create(opportunity, None, event).await }))
                })
                .collect();
            let mut ids = Vec::with_capacity(creates.len());
            for (id, create) in creates {
                assert!(matches!(create.await.unwrap(), Ok(CreateOutcome::Created)));
                ids.push(id);
            }
            ids
        }

        async fn assert_stored(&self, ids: Vec<Uuid>) {
            for id in ids {
                assert!(
                    self.db.get_opportunity(id).await.unwrap().is_some(),
                    "create {id} was answered but is not stored"
                );
            }
        }
    }

    /// Under a steady stream of groups, the checkpointer's PASSIVE checkpoints alone never let
    /// the log start again (it grew past 1.7 GB in 20 s of `bench/run`'s creates): the writer
    /// keeps it near its bound, and every create stays stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_write_ahead_log_stays_near_its_bound_under_steady_writes() {
        let file = Bounded::new();
        let mut largest = 0;
        let mut ids = Vec::new();
        for _ in 0..60 {
            ids.extend(file.write_group().await);
            largest = largest.max(file.log_size());
        }
        // 1,920 creates write several times the bound to the log (each group adds pages of
        // six indexes, the table and the events); one group may take it past the bound before
        // the writer checkpoints.
        assert!(largest <= 2 * LIMIT, "the log reached {largest} bytes with a bound of {LIMIT}");
        file.assert_stored(ids).await;
    }

    /// Room left on the disk of [`a_log_grown_long_is_cut_back_when_the_disk_fills`].
    static ROOM_LEFT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX / 8);

    /// A log that grew to its bound while the disk had room is cut back to the smaller bound
    /// once the disk fills up: the file's size comes back under it (it stayed at its largest
    /// before, above the bound, and every group then checkpointed the whole log).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_grown_long_is_cut_back_when_the_disk_fills() {
        use std::sync::atomic::Ordering;
        let file = Bounded::with_free_space(|_| Some(ROOM_LEFT.load(Ordering::Relaxed)));
        let mut ids = Vec::new();
        while file.log_size() < LIMIT * 3 / 4 {
            ids.extend(file.write_group().await);
        }
        // No room left: the bound is the floor, the idle size.
        ROOM_LEFT.store(0, Ordering::Relaxed);
        let mut largest_since = 0;
        for _ in 0..20 {
            ids.extend(file.write_group().await);
        }
        for _ in 0..20 {
            ids.extend(file.write_group().await);
            largest_since = largest_since.max(file.log_size());
        }
        // One group may take it past the bound before the writer checkpoints.
        assert!(largest_since <= 2 * IDLE_KEEP, "the log stayed at {largest_since} bytes with a bound of {IDLE_KEEP}");
        file.assert_stored(ids).await;
    }

    /// A read that holds the log keeps it from starting again: the writes go on (the writer waits
    /// for that read at most [`RESTART_WAIT`], then a second before it tries again; a wait of the
    /// whole database timeout for every group would take this test past five minutes), and once
    /// the read ends the log is written from its start again and cut back to its bound.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_holding_the_log_delays_its_bound_but_never_the_writes() {
        let file = Bounded::new();
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.extend(file.write_group().await);
        }
        // A read transaction that has read: it holds its snapshot, and with it the log.
        let mut reader = crate::db::establish_sqlite(&file.path).unwrap();
        reader.batch_execute("BEGIN; SELECT count(*) FROM opportunities;").unwrap();
        for _ in 0..60 {
            ids.extend(file.write_group().await);
        }
        let held = file.log_size();
        assert!(held > 2 * LIMIT, "the log held by a read is {held} bytes: the test wrote too little to show it");
        reader.batch_execute("COMMIT;").unwrap();
        drop(reader);
        // The next checkpoint that finishes lets the log start again, and cuts the file back.
        let until = Instant::now() + Duration::from_secs(20);
        while file.log_size() > 2 * LIMIT && Instant::now() < until {
            ids.extend(file.write_group().await);
        }
        let size = file.log_size();
        assert!(size <= 2 * LIMIT, "the log is still {size} bytes after the read ended (bound {LIMIT})");
        file.assert_stored(ids).await;
    }

    /// Once writes pause, a log longer than its idle size is checkpointed and cut to nothing:
    /// the disk a burst took is given back, and what the log held is in the database file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_log_is_cut_back_once_writes_pause() {
        let file = Bounded::new();
        let mut ids = Vec::new();
        while file.log_size() <= IDLE_KEEP {
            ids.extend(file.write_group().await);
        }
        let until = Instant::now() + Duration::from_secs(10);
        while file.log_size() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(file.log_size(), 0, "the log was not cut back within 10 s of the last write");
        file.assert_stored(ids.clone()).await;
        // The writer goes on with a log written from its start.
        ids.extend(file.write_group().await);
        assert!(file.log_size() > 0);
        file.assert_stored(ids).await;
    }

    /// The writer's own connection reads the file through the memory map, at the size asked for
    /// (SQLite quietly caps a size past its compile-time limit, and ignores a malformed pragma).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_reads_the_database_through_a_memory_map() {
        #[derive(diesel::QueryableByName)]
        struct MmapSize {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            mmap_size: i64,
        }
        let file = Bounded::new();
        let size = file
            .writer
            .run(Instant::now() + Duration::from_secs(5), |conn| {
                use diesel::RunQueryDsl;
                diesel::sql_query("PRAGMA mmap_size").get_result::<MmapSize>(conn).map_err(DbError::classify)
            })
            .await
            .unwrap()
            .mmap_size;
        assert_eq!(size, WRITER_MMAP as i64);
    }

    /// With room to spare the log may reach its limit; with little room, a quarter of what the
    /// log and the free space add up to, never less than the floor.
    #[test]
    fn the_log_takes_at_most_a_quarter_of_the_room_left() {
        const MIB: u64 = 1 << 20;
        assert_eq!(log_bound(1024 * MIB, 64 * MIB, 0, Some(50_000 * MIB)), 1024 * MIB);
        assert_eq!(log_bound(1024 * MIB, 64 * MIB, 100 * MIB, Some(700 * MIB)), 200 * MIB);
        assert_eq!(log_bound(1024 * MIB, 64 * MIB, 70 * MIB, Some(100 * MIB)), 64 * MIB);
        assert_eq!(log_bound(1024 * MIB, 64 * MIB, 0, None), 1024 * MIB);
        // No room at all: the floor; a limit below the floor stays the limit.
        assert_eq!(log_bound(1024 * MIB, 64 * MIB, 0, Some(0)), 64 * MIB);
        assert_eq!(log_bound(MIB, 64 * MIB, 0, Some(0)), MIB);
        // The file system of a real path answers.
        assert!(free_space(&std::env::temp_dir().join("t.db-wal")).is_some_and(|free| free > 0));
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

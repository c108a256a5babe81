//! Group commit for SQLite: one writer thread takes the creates that arrive together and
//! commits them in one transaction, so that one fsync serves many callers.
//!
//! SQLite has a single write lock: several pooled writers only queue on it, each paying its own
//! fsync (`synchronous=FULL`). Here callers queue in a channel instead; the writer drains what is
//! waiting (up to [`MAX_GROUP`]), inserts the creates without a key as one multi-row INSERT and
//! runs each keyed create in its own savepoint, commits once, and only then answers each caller.
//! When the multi-row INSERT fails, nothing of it is kept and its creates run one by one in
//! savepoints too: a create that fails is rolled back alone and the others go on. A failed
//! commit fails the whole group, and nothing of it is stored.

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
    /// A job still queued at its deadline is answered SERVICE_UNAVAILABLE and never run, so a
    /// caller is never told "unavailable" about a create that is then stored.
    deadline: Instant,
    opportunity: Opportunity,
    key: Option<IdempotencyRecord>,
    /// Appended, in the group's transaction, when the create is stored.
    event: NewEvent,
    reply: oneshot::Sender<Result<CreateOutcome, DbError>>,
}

/// The handle callers enqueue creates with; the writer thread ends when the last handle is
/// dropped, after finishing what was queued.
#[derive(Debug, Clone)]
pub struct SqliteWriter {
    jobs: mpsc::Sender<Job>,
    timeout: Duration,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("id", &self.opportunity.id).finish_non_exhaustive()
    }
}

impl SqliteWriter {
    /// Starts the writer thread on its own connection to `path`. A create waits at most
    /// `timeout` in the queue and `timeout` for SQLite's write lock (held by another process).
    pub fn start(path: &Path, timeout: Duration) -> anyhow::Result<Self> {
        let mut conn = super::establish_sqlite(path)?;
        conn.batch_execute(&format!("PRAGMA busy_timeout = {};", timeout.as_millis().clamp(1, i32::MAX as u128)))?;
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
                }
            }
        })?;
        Ok(Self { jobs, timeout })
    }

    /// Stores one opportunity (with its idempotency key) and answers once it is committed.
    pub async fn create(
        &self,
        opportunity: Opportunity,
        key: Option<IdempotencyRecord>,
        event: NewEvent,
    ) -> Result<CreateOutcome, DbError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { deadline: Instant::now() + self.timeout, opportunity, key, event, reply })
            .await
            .map_err(|_| DbError::Unavailable("the SQLite writer has stopped".into()))?;
        answer.await.map_err(|_| DbError::Unavailable("the SQLite writer stopped before answering".into()))?
    }
}

/// Answers SERVICE_UNAVAILABLE to the jobs of `group` whose deadline has passed and takes them
/// out: they are never run.
fn refuse_expired(group: &mut Vec<Job>, now: Instant) {
    for job in group.extract_if(.., |job| job.deadline <= now) {
        let _ = job.reply.send(Err(DbError::Unavailable("waited too long for the SQLite writer".into())));
    }
}

/// Commits a group and answers every job of it; `group` is left empty.
fn commit_group(conn: &mut SqliteConnection, group: &mut Vec<Job>) {
    let size = group.len();
    let mut outcomes: Vec<Result<CreateOutcome, DbError>> = Vec::with_capacity(size);
    let committed = conn.immediate_transaction(|conn| {
        // The creates without a key go in as one INSERT; when it fails (nothing of it is kept),
        // each goes alone, as the keyed ones do.
        let keyless: Vec<&Opportunity> = group.iter().filter(|j| j.key.is_none()).map(|j| &j.opportunity).collect();
        let batched = keyless.len() > 1 && insert_sqlite_batch(conn, &keyless).is_ok();
        for job in group.iter() {
            if batched && job.key.is_none() {
                outcomes.push(Ok(CreateOutcome::Created));
                continue;
            }
            // `create_sqlite` runs in a savepoint: its failure is its own.
            outcomes.push(create_sqlite(conn, &job.opportunity, job.key.as_ref()).map_err(DbError::classify));
        }
        // The events of what was stored, last: no create without its event, no event without
        // its create (a failure here fails the whole group).
        let created: Vec<NewEvent> = group
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| matches!(outcome, Ok(CreateOutcome::Created)))
            .map(|(job, _)| job.event.clone())
            .collect();
        events::append(&mut DbConn::Sqlite(conn), &created)?;
        Ok::<_, diesel::result::Error>(())
    });
    if let Err(e) = committed {
        tracing::warn!(error = %e, size, "a group commit failed; none of its creates is stored");
        let e = DbError::classify(e);
        let message = e.to_string();
        let unavailable = matches!(e, DbError::Unavailable(_));
        outcomes = (0..size)
            .map(|_| {
                Err(if unavailable {
                    DbError::Unavailable(message.clone())
                } else {
                    DbError::Query(diesel::result::Error::QueryBuilderError(message.clone().into()))
                })
            })
            .collect();
    }
    tracing::trace!(size, "group committed");
    for (job, outcome) in group.drain(..).zip(outcomes) {
        // A caller that went away (timeout, closed connection) no longer needs the answer.
        let _ = job.reply.send(outcome);
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
        (Job { deadline, opportunity, key: None, event, reply }, answer)
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

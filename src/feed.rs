//! The live side of the change feed (CONTRACT.md §9): one task per process follows the stored
//! events in position order and hands them, in batches, to every live subscription of this
//! process. The database stays the truth: a subscriber that falls behind the batches (or starts
//! from a `since`) reads what it missed from the database, so no event is skipped or repeated.
//!
//! The task polls the feed's head every [`POLL_INTERVAL`], so that a change committed by any
//! other process on the same database is seen within that time, and, while this process has
//! live subscriptions, also wakes as soon as this process commits events. A poll is one
//! primary-key read of a one-row table. (Polling rather than PostgreSQL's LISTEN/NOTIFY keeps
//! the feed working through PgBouncer in transaction mode and across a failover, where a
//! listening connection would be lost silently.)

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::db::Database;
use crate::db::events::{self, Event};

/// How often the feed looks for events committed by other processes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// Events read at a time.
pub const PAGE: i64 = 1000;
/// Batches kept for subscribers that are a little behind; one further behind reads from the
/// database.
const BATCHES: usize = 256;

/// The events after position `after`, through position `through` (every stored event in that
/// range, in order).
#[derive(Debug)]
pub struct Batch {
    pub after: i64,
    pub through: i64,
    pub events: Vec<Arc<Event>>,
}

/// The handle subscriptions follow the feed with.
#[derive(Debug, Clone)]
pub struct Feed {
    batches: broadcast::Sender<Arc<Batch>>,
    /// The highest head this process has read: every position up to it was handed out.
    known_head: Arc<AtomicI64>,
}

impl Feed {
    /// Starts following the database's events.
    pub fn start(db: Database) -> Self {
        let (batches, _) = broadcast::channel(BATCHES);
        let known_head = Arc::new(AtomicI64::new(0));
        tokio::spawn(follow(db, batches.clone(), known_head.clone()));
        Self { batches, known_head }
    }

    /// Whether `position` was handed out: known without a query when it is at most the last
    /// head read here (at most [`POLL_INTERVAL`] old), else the head is read again.
    pub async fn was_issued(&self, db: &Database, position: i64) -> Result<bool, crate::db::DbError> {
        if position <= self.known_head.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let head = db.run(events::head).await?;
        self.known_head.fetch_max(head, Ordering::Relaxed);
        Ok(position <= head)
    }

    /// Live batches from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Batch>> {
        self.batches.subscribe()
    }
}

async fn follow(db: Database, batches: broadcast::Sender<Arc<Batch>>, known_head: Arc<AtomicI64>) {
    let mut last: Option<i64> = None;
    let mut failures = 0u32;
    // A steady tick: commits of this process that wake the task more often than the interval
    // do not put the poll off.
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if batches.receiver_count() == 0 {
            // Nobody here to hand this process's commits to: the poll alone keeps the head known
            // (a subscription that starts reads what came before it from the database). Woken
            // by each commit, the task had read the head once per group commit under creates,
            // for about 5% of the service's CPU (`perf record` under `bench/run`, SQLite).
            poll.tick().await;
        } else {
            tokio::select! {
                _ = db.committed() => {}
                _ = poll.tick() => {}
            }
        }
        let head = match db.run(events::head).await {
            Ok(head) => head,
            Err(e) => {
                // Logged once per run of failures: a database that is down for a minute does
                // not write 2,400 lines.
                if failures == 0 {
                    tracing::warn!(error = %e, "the change feed cannot read the database; retrying");
                }
                failures = failures.saturating_add(1);
                continue;
            }
        };
        known_head.fetch_max(head, Ordering::Relaxed);
        if failures > 0 {
            tracing::info!(failures, "the change feed reads the database again");
            failures = 0;
        }
        let Some(mut after) = last.filter(|_| batches.receiver_count() > 0) else {
            // Nobody listens: nothing to read, only the place to start from.
            last = Some(head);
            continue;
        };
        while after < head {
            let page = match db.run(move |conn| events::page(conn, Some(after), None, PAGE)).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "the change feed cannot read events; retrying");
                    break;
                }
            };
            let full = page.events.len() as i64 == PAGE;
            let through = if full { page.events.last().map_or(page.head, |e| e.position) } else { page.head };
            let events = page.events.into_iter().map(Arc::new).collect();
            let _ = batches.send(Arc::new(Batch { after, through, events }));
            after = through;
            if !full {
                break;
            }
        }
        last = Some(after);
    }
}

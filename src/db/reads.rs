//! Reads by id, grouped: the `opportunity.get` calls that arrive while a read is under way are
//! read together in the next trip to the database, as the writers group creates
//! (`pg_writer.rs`, `writer.rs`).
//!
//! Under load, a read by id cost the service far more around its query than in it: each call
//! took a blocking thread of its own and woke the database for one row. `bench/run` measured
//! `get` at 0.29 × `pgbench -S` on PostgreSQL at 32 connections, with a fifth of the service's
//! CPU in the kernel's task switches. Here a call queues its id, and when no group is under way
//! it takes every id waiting (up to [`MAX_GROUP`]) and reads them as one group through
//! [`Database::run`] (its slots, its timeout): on PostgreSQL one `SELECT … WHERE id = ANY($1)`,
//! on SQLite the one-row statement once per id on one connection. The group that ends starts
//! the next one with what queued meanwhile. A call that finds nothing under way and nothing
//! waiting reads at once, alone, in the caller's own task, as before grouping: at one connection
//! a spawned task between the call and the database had cost 0.15 ms a call on PostgreSQL.
//!
//! One group at a time ([`GROUPS`]) measured best: at 32 connections on PostgreSQL, 17,000–19,000
//! `get`s/s with one group against 15,900 with two and 10,200–10,900 with four (groups of 2 on
//! average: the calls then spread over the groups instead of joining one).
//!
//! A group reads what was committed when it starts, which is after each of its calls arrived:
//! a caller reads its own writes. A stored row that does not read back fails only its callers;
//! a failure of the trip itself (the database unavailable) fails the group's calls alike.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use uuid::Uuid;

use super::{Database, DbError, copy_error, opportunity};
use crate::domain::opportunity::Opportunity;

/// Groups read at once.
const GROUPS: usize = 1;
/// The most ids read by one group.
const MAX_GROUP: usize = 256;

type Reply = oneshot::Sender<Result<Option<Opportunity>, DbError>>;

/// The reads waiting for a group, and the right to start one.
#[derive(Debug)]
pub(super) struct Reads {
    waiting: Mutex<Vec<(Uuid, Reply)>>,
    groups: Arc<Semaphore>,
}

impl Default for Reads {
    fn default() -> Self {
        Self { waiting: Mutex::new(Vec::new()), groups: Arc::new(Semaphore::new(GROUPS)) }
    }
}

/// A group under way: when it ends, also by a panic, its right goes back and the reads that
/// queued meanwhile start.
struct Running {
    db: Database,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Running {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.db.start_reads();
    }
}

impl Database {
    /// The opportunity with this id, in any workspace (who may read it is for the caller to
    /// say), read in the next group of reads; SERVICE_UNAVAILABLE within the database timeout.
    pub async fn get_opportunity(&self, id: Uuid) -> Result<Option<Opportunity>, DbError> {
        let (reply, answer) = oneshot::channel();
        self.reads.waiting.lock().unwrap_or_else(PoisonError::into_inner).push((id, reply));
        if let Some((running, group)) = self.take_group() {
            if let [(alone, _)] = group.as_slice() {
                // Nothing else waited: this call reads here, as it did before reads were
                // grouped, with no task between it and the database. Calls that arrive
                // meanwhile queue, and start when `running` goes (also if this call is dropped).
                debug_assert_eq!(*alone, id, "a call is queued before it takes a group");
                let read = self.run(move |conn| opportunity::get(conn, id)).await;
                drop(running);
                return read;
            }
            running.spawn(group);
            self.start_reads();
        }
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            // The group's task ended without answering (it panicked).
            Ok(Err(_)) => Err(DbError::Unavailable("the read ended without an answer".into())),
            Err(_) => Err(DbError::Unavailable(format!("the database did not answer within {timeout:?}"))),
        }
    }

    /// Starts groups of the waiting reads while fewer than [`GROUPS`] are under way.
    fn start_reads(&self) {
        while let Some((running, group)) = self.take_group() {
            running.spawn(group);
        }
    }

    /// The right to run a group and the reads waiting for it (up to [`MAX_GROUP`]), when fewer
    /// than [`GROUPS`] are under way and a read is waiting.
    fn take_group(&self) -> Option<(Running, Vec<(Uuid, Reply)>)> {
        let permit = self.reads.groups.clone().try_acquire_owned().ok()?;
        let group: Vec<(Uuid, Reply)> = {
            let mut waiting = self.reads.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            if waiting.len() <= MAX_GROUP {
                std::mem::take(&mut *waiting)
            } else {
                waiting.drain(..MAX_GROUP).collect()
            }
        };
        // An empty group gives its right back at once (`Running` is not built).
        (!group.is_empty()).then(|| (Running { db: self.clone(), permit: Some(permit) }, group))
    }
}

impl Running {
    /// Reads `group` in a task of its own, so that a caller that goes away does not take the
    /// others' answers with it.
    fn spawn(self, group: Vec<(Uuid, Reply)>) {
        tokio::spawn(async move {
            let ids: Vec<Uuid> = group.iter().map(|(id, _)| *id).collect();
            let read = self.db.run(move |conn| opportunity::get_many(conn, &ids)).await;
            answer(group, read);
            drop(self);
        });
    }
}

/// Hands each caller of a group its opportunity (or `None`), or the failure of its row or of
/// the group.
fn answer(group: Vec<(Uuid, Reply)>, read: Result<Vec<opportunity::ReadById>, DbError>) {
    let mut found = match read {
        Ok(rows) => rows.into_iter().collect::<HashMap<_, _>>(),
        Err(e) => {
            for (_, reply) in group {
                // A caller that went away no longer needs the answer.
                let _ = reply.send(Err(copy_error(&e)));
            }
            return;
        }
    };
    // How many callers of the group asked for each id: the last one takes the row.
    let mut asked: HashMap<Uuid, usize> = HashMap::with_capacity(group.len());
    for (id, _) in &group {
        *asked.entry(*id).or_default() += 1;
    }
    for (id, reply) in group {
        let left = asked.get_mut(&id).expect("counted above");
        *left -= 1;
        let row = if *left == 0 {
            found.remove(&id)
        } else {
            match found.get(&id) {
                Some(Ok(o)) => Some(Ok(o.clone())),
                Some(Err(e)) => Some(Err(copy_error(e))),
                None => None,
            }
        };
        let _ = reply.send(row.transpose());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group whose trip to the database failed answers each of its callers with that failure
    /// (the same kind and message), also two callers of one id.
    #[test]
    fn a_failed_group_gives_each_caller_its_failure() {
        let id = Uuid::now_v7();
        let (replies, answers): (Vec<_>, Vec<_>) = (0..3).map(|_| oneshot::channel()).unzip();
        let group: Vec<(Uuid, Reply)> =
            replies.into_iter().zip([id, id, Uuid::now_v7()]).map(|(reply, id)| (id, reply)).collect();
        answer(group, Err(DbError::Unavailable("the server closed the connection".into())));
        for mut answer in answers {
            let got = answer.try_recv().expect("answered");
            assert!(matches!(&got, Err(DbError::Unavailable(m)) if m == "the server closed the connection"), "{got:?}");
        }
    }
}

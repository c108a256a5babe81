//! Group commit through the storage layer (`Database::create_opportunity`,
//! `Database::change_opportunity`), on the backend of this run: creates and changes that queue up
//! while the table is locked from outside go in together once it is released; a create or change
//! that fails inside a group fails alone, keys replay inside a group, each stored change has one
//! event in order, and a write answered SERVICE_UNAVAILABLE is never stored. Reads by id
//! (`Database::get_opportunity`) are grouped too: each caller of a group gets its own answer.

use std::time::Duration;

use chrono::Utc;
use diesel::Connection;
use diesel::connection::SimpleConnection;
use opportunity_service::db::events::{self, EventKind, NewEvent};
use opportunity_service::db::opportunity::{
    self, ChangeKey, Changed, CreateOutcome, Decision, IdempotencyRecord, count,
};
use opportunity_service::db::{Database, DatabaseUrl, DbError, PoolOptions};
use opportunity_service::domain::opportunity::{CreateOpportunity, Opportunity, PipelineType};
use uuid::Uuid;

use crate::helpers::TestDatabase;

/// Blocks every writer of the backend from outside: PostgreSQL's table lock (INSERT waits for
/// it), SQLite's write lock. Released on `release` or drop.
enum OutsideLock {
    Postgres(diesel::PgConnection),
    Sqlite(diesel::SqliteConnection),
}

impl OutsideLock {
    fn take(db: &TestDatabase) -> Self {
        match DatabaseUrl::parse(&db.url).unwrap() {
            DatabaseUrl::Postgres(url) => {
                let mut conn = diesel::PgConnection::establish(&url).unwrap();
                conn.batch_execute("BEGIN; LOCK TABLE opportunities IN EXCLUSIVE MODE;").unwrap();
                Self::Postgres(conn)
            }
            DatabaseUrl::Sqlite(path) => {
                let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
                conn.batch_execute("BEGIN IMMEDIATE").unwrap();
                Self::Sqlite(conn)
            }
        }
    }

    fn release(self) {
        match self {
            Self::Postgres(mut c) => c.batch_execute("COMMIT").unwrap(),
            Self::Sqlite(mut c) => c.batch_execute("COMMIT").unwrap(),
        }
    }
}

fn opportunity(title: &str) -> Opportunity {
    let input = CreateOpportunity {
        customer_id: Some(Uuid::now_v7()),
        title: Some(title.into()),
        pipeline_type: Some(PipelineType::Retrofit),
        ..Default::default()
    };
    Opportunity::new(input, Uuid::nil(), Uuid::nil(), Utc::now()).unwrap()
}

fn key(key: &str, hash: &str) -> Option<IdempotencyRecord> {
    Some(IdempotencyRecord { key: key.into(), request_hash: hash.into(), response: format!("\"{hash}\"") })
}

fn open(db: &TestDatabase, timeout: Duration) -> Database {
    // The service's default pool size on PostgreSQL, so that it has its default writers.
    Database::connect(DatabaseUrl::parse(&db.url).unwrap(), PoolOptions { size: Some(16), timeout }).unwrap()
}

async fn stored(db: &Database) -> i64 {
    db.run(|conn| count(conn, None)).await.unwrap()
}

/// The writer threads of each kind (creates, changes) that [`open`] gives the database.
fn writer_threads(db: &TestDatabase) -> usize {
    if db.url.starts_with("postgres") { opportunity_service::db::pg_writer::writers(16) as usize } else { 1 }
}

/// Starts a write and returns once it is in a writer's queue: its first poll sends it there (the
/// queue has room) and then waits for the answer. Calls started so queue in the order started,
/// with no sleep guessing how long a call takes to reach the queue.
async fn enqueue<T: Send + 'static>(
    call: impl std::future::Future<Output = T> + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    let mut call = Box::pin(call);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(call.as_mut().poll(cx))).await;
    assert!(first.is_pending(), "a write is answered only after its group commits");
    tokio::spawn(call)
}

/// Waits until exactly `n` writes wait for a writer thread (the `database_writes_queued` gauge).
async fn until_queued(db: &Database, n: usize) {
    let started = std::time::Instant::now();
    while db.queued_writes() != n {
        assert!(started.elapsed() < Duration::from_secs(10), "{} writes queued, not {n}", db.queued_writes());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Creates `jobs` while every writer is blocked on the outside lock, so that they queue and go in
/// as one group after it is released; returns their outcomes in order.
async fn queued_behind_a_lock(
    test_db: &TestDatabase,
    db: &Database,
    jobs: Vec<(Opportunity, Option<IdempotencyRecord>)>,
) -> Vec<Result<CreateOutcome, DbError>> {
    let lock = OutsideLock::take(test_db);
    // Each blocker is taken by one writer, which then waits for the lock.
    let mut blockers = Vec::new();
    for i in 0..writer_threads(test_db) {
        let call = db.clone();
        blockers.push(
            enqueue(async move { call.create_opportunity(opportunity(&format!("blocker {i}")), None).await }).await,
        );
        until_queued(db, 0).await; // taken
    }
    let mut calls = Vec::new();
    for (n, (o, k)) in jobs.into_iter().enumerate() {
        let call = db.clone();
        calls.push(enqueue(async move { call.create_opportunity(o, k).await }).await);
        until_queued(db, n + 1).await;
    }
    lock.release();
    for blocker in blockers {
        assert_eq!(blocker.await.unwrap().unwrap(), CreateOutcome::Created, "a blocker is stored");
    }
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await.unwrap());
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_create_does_not_fail_its_group() {
    let test_db = TestDatabase::new();
    let db = open(&test_db, Duration::from_secs(10));
    let twin = opportunity("twin");
    let outcomes = queued_behind_a_lock(
        &test_db,
        &db,
        vec![
            (opportunity("a"), None),
            (twin.clone(), None),
            (twin, None), // breaks the primary key
            (opportunity("b"), None),
            (opportunity("c"), None),
        ],
    )
    .await;
    assert!(matches!(outcomes[0], Ok(CreateOutcome::Created)), "{:?}", outcomes[0]);
    assert!(matches!(outcomes[1], Ok(CreateOutcome::Created)), "{:?}", outcomes[1]);
    assert!(matches!(outcomes[2], Err(DbError::Query(_))), "the twin fails alone: {:?}", outcomes[2]);
    assert!(matches!(outcomes[3], Ok(CreateOutcome::Created)), "{:?}", outcomes[3]);
    assert!(matches!(outcomes[4], Ok(CreateOutcome::Created)), "{:?}", outcomes[4]);
    assert_eq!(stored(&db).await, writer_threads(&test_db) as i64 + 4, "the blockers, a, twin, b, c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_in_a_group_replay_and_refuse_reuse() {
    let test_db = TestDatabase::new();
    let db = open(&test_db, Duration::from_secs(10));
    let outcomes = queued_behind_a_lock(
        &test_db,
        &db,
        vec![
            (opportunity("plain"), None),
            (opportunity("k1"), key("k", "h1")),
            (opportunity("k2"), key("k", "h1")), // replays k1, stored in the same group
            (opportunity("k3"), key("k", "h2")), // reuses the key with other params
            (opportunity("other key"), key("other", "h3")),
            (opportunity("plain too"), None),
        ],
    )
    .await;
    let outcomes: Vec<CreateOutcome> = outcomes.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        outcomes,
        vec![
            CreateOutcome::Created,
            CreateOutcome::Created,
            CreateOutcome::Replayed("\"h1\"".into()),
            CreateOutcome::KeyReused,
            CreateOutcome::Created,
            CreateOutcome::Created,
        ]
    );
    assert_eq!(stored(&db).await, writer_threads(&test_db) as i64 + 4, "the blockers, plain, k1, other key, plain too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_every_chunk_size_is_stored_whole() {
    // 127 = 64 + 32 + 16 + 8 + 4 + 2 + 1: the multi-row INSERT goes in one chunk of each size.
    let test_db = TestDatabase::new();
    let db = open(&test_db, Duration::from_secs(20));
    let jobs = (0..127).map(|i| (opportunity(&format!("chunked {i}")), None)).collect();
    let outcomes = queued_behind_a_lock(&test_db, &db, jobs).await;
    assert!(outcomes.iter().all(|o| matches!(o, Ok(CreateOutcome::Created))), "{outcomes:?}");
    assert_eq!(stored(&db).await, 127 + writer_threads(&test_db) as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_creates_are_each_stored_once() {
    let test_db = TestDatabase::new();
    let db = open(&test_db, Duration::from_secs(10));
    let mut calls = Vec::new();
    for i in 0..400 {
        let db = db.clone();
        let k = (i % 4 == 0).then(|| key(&format!("key {i}"), "h")).flatten();
        calls.push(tokio::spawn(async move { db.create_opportunity(opportunity(&format!("burst {i}")), k).await }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), CreateOutcome::Created);
    }
    assert_eq!(stored(&db).await, 400);
}

/// Starts `calls` while every writer is blocked on the outside lock, and asserts that each is
/// answered SERVICE_UNAVAILABLE within about `timeout`; the lock is held a while longer, so that
/// a write still running would slip in after its answer and be seen by the caller's checks.
async fn refused_in_time_behind_a_lock<T: std::fmt::Debug + Send + 'static>(
    test_db: &TestDatabase,
    timeout: Duration,
    calls: impl FnOnce() -> Vec<tokio::task::JoinHandle<Result<T, DbError>>>,
) {
    let lock = OutsideLock::take(test_db);
    let started = std::time::Instant::now();
    let mut outcomes = Vec::new();
    for call in calls() {
        outcomes.push(call.await.unwrap());
    }
    let waited = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.release();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for outcome in &outcomes {
        assert!(matches!(outcome, Err(DbError::Unavailable(_))), "{outcome:?}");
    }
    assert!(waited < timeout + Duration::from_secs(2), "answered after {waited:?} (timeout {timeout:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_that_wait_past_the_timeout_are_refused_and_never_stored() {
    let test_db = TestDatabase::new();
    let timeout = Duration::from_millis(500);
    let db = open(&test_db, timeout);
    refused_in_time_behind_a_lock(&test_db, timeout, || {
        (0..6)
            .map(|i| {
                let db = db.clone();
                let k = (i % 2 == 0).then(|| key(&format!("late {i}"), "h")).flatten();
                tokio::spawn(async move { db.create_opportunity(opportunity(&format!("late {i}")), k).await })
            })
            .collect()
    })
    .await;
    assert_eq!(stored(&db).await, 0, "a create answered unavailable is never stored");
}

/// A change that sets the title (any title: one over 200 characters breaks the table's CHECK),
/// through `Database::change_opportunity` as the lifecycle methods call it.
async fn retitle(db: &Database, id: Uuid, title: String, timeout: Duration) -> Result<Changed<()>, DbError> {
    retitle_keyed(db, id, title, timeout, None).await
}

/// [`retitle`] with an idempotency key.
async fn retitle_keyed(
    db: &Database,
    id: Uuid,
    title: String,
    timeout: Duration,
    key: Option<ChangeKey>,
) -> Result<Changed<()>, DbError> {
    let decide = move |current: Option<Opportunity>| -> Decision<()> {
        let Some(current) = current else { return Decision::Refuse(()) };
        let mut next = current.clone();
        next.title = title.clone();
        next.version = current.version + 1;
        next.updated_at = Utc::now();
        let json = serde_json::to_string(&next).unwrap();
        let event = NewEvent::new(EventKind::Updated, Some(&current), &next, Uuid::nil(), json);
        Decision::Write(next, Box::new(event))
    };
    db.change_opportunity(id, key, std::time::Instant::now() + timeout, decide).await
}

/// The kinds and opportunity ids of every event stored, in feed order.
async fn feed(db: &Database) -> Vec<(String, String)> {
    let page = db.run(|conn| events::page(conn, None, None, 10_000)).await.unwrap();
    page.events
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(e.json.get()).unwrap();
            (v["type"].as_str().unwrap().to_string(), v["opportunity"]["id"].as_str().unwrap().to_string())
        })
        .collect()
}

async fn title_and_version(db: &Database, id: Uuid) -> (String, i32) {
    let o = db.run(move |conn| opportunity::get(conn, id)).await.unwrap().unwrap();
    (o.title, o.version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_change_does_not_fail_its_group_and_each_change_has_one_event() {
    let test_db = TestDatabase::new();
    let timeout = Duration::from_secs(10);
    let db = open(&test_db, timeout);
    let mut ids = Vec::new();
    for name in ["blocker 0", "blocker 1", "a", "b", "c", "d"] {
        let o = opportunity(name);
        ids.push(o.id);
        assert_eq!(db.create_opportunity(o, None).await.unwrap(), CreateOutcome::Created);
    }
    let lock = OutsideLock::take(&test_db);
    // The blockers occupy the writers (two on PostgreSQL, one on SQLite) while the lock is held;
    // the changes after them queue and go in as one group once it is released.
    let mut calls = Vec::new();
    let changes = [
        (ids[0], "blocker 0 changed".to_string()),
        (ids[1], "blocker 1 changed".to_string()),
        (ids[2], "a changed".to_string()),
        (ids[3], "b".repeat(201)), // breaks the CHECK on title
        (ids[4], "c changed".to_string()),
        (ids[5], "d once".to_string()),
        (ids[5], "d twice".to_string()), // the same opportunity again, in order
    ];
    let blockers = writer_threads(&test_db);
    for (i, (id, title)) in changes.into_iter().enumerate() {
        let call = db.clone();
        calls.push(enqueue(async move { retitle(&call, id, title, timeout).await }).await);
        // The first ones are taken by the writers, which wait for the lock; the others queue.
        until_queued(&db, (i + 1).saturating_sub(blockers)).await;
    }
    lock.release();
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await.unwrap());
    }
    for (i, outcome) in outcomes.iter().enumerate() {
        if i == 3 {
            assert!(matches!(outcome, Err(DbError::Query(_))), "the long title fails alone: {outcome:?}");
        } else {
            assert!(matches!(outcome, Ok(Changed::Done(_))), "change {i}: {outcome:?}");
        }
    }
    assert_eq!(title_and_version(&db, ids[2]).await, ("a changed".into(), 2));
    assert_eq!(title_and_version(&db, ids[3]).await, ("b".into(), 1), "the failed change left nothing");
    assert_eq!(title_and_version(&db, ids[4]).await, ("c changed".into(), 2));
    assert_eq!(title_and_version(&db, ids[5]).await, ("d twice".into(), 3), "two changes of d, in order");

    // One event per stored change, after the creates' events; none for the failed one.
    let events = feed(&db).await;
    assert_eq!(events.len(), 6 + 6, "{events:?}");
    let updated: Vec<&String> = events[6..]
        .iter()
        .map(|(kind, id)| {
            assert_eq!(kind, "updated");
            id
        })
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let expected = match i {
            3 => 0,
            5 => 2,
            _ => 1,
        };
        assert_eq!(updated.iter().filter(|e| **e == &id.to_string()).count(), expected, "events of {i}");
    }
    // d's two events are in the order of its changes.
    let d: Vec<usize> = events.iter().enumerate().filter(|(_, e)| e.1 == ids[5].to_string()).map(|(i, _)| i).collect();
    let page = db.run(|conn| events::page(conn, None, None, 10_000)).await.unwrap();
    let title = |i: usize| -> String {
        let v: serde_json::Value = serde_json::from_str(page.events[i].json.get()).unwrap();
        v["opportunity"]["title"].as_str().unwrap().to_string()
    };
    assert_eq!((title(d[1]), title(d[2])), ("d once".into(), "d twice".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_that_wait_past_the_timeout_are_refused_and_never_stored() {
    let test_db = TestDatabase::new();
    let timeout = Duration::from_millis(500);
    let db = open(&test_db, Duration::from_secs(10));
    let mut ids = Vec::new();
    for i in 0..6 {
        let o = opportunity(&format!("kept {i}"));
        ids.push(o.id);
        db.create_opportunity(o, None).await.unwrap();
    }
    refused_in_time_behind_a_lock(&test_db, timeout, || {
        ids.iter()
            .map(|&id| {
                let db = db.clone();
                tokio::spawn(async move { retitle(&db, id, "late".into(), timeout).await })
            })
            .collect()
    })
    .await;
    for (i, &id) in ids.iter().enumerate() {
        assert_eq!(
            title_and_version(&db, id).await,
            (format!("kept {i}"), 1),
            "a change answered unavailable is never stored"
        );
    }
    assert_eq!(feed(&db).await.len(), 6, "the creates' events only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_commits_reach_the_database_file_and_the_log_stays_small() {
    let test_db = TestDatabase::new();
    let DatabaseUrl::Sqlite(path) = DatabaseUrl::parse(&test_db.url).unwrap() else {
        eprintln!("sqlite_commits_reach_the_database_file_and_the_log_stays_small: SQLite only, skipped on PostgreSQL");
        return;
    };
    let db = open(&test_db, Duration::from_secs(10));
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let wal = path.with_file_name(format!("{}-wal", path.file_name().unwrap().to_str().unwrap()));
    let empty = size(&path);
    let mut largest_wal = 0;
    for round in 0..20 {
        let calls: Vec<_> = (0..100)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move { db.create_opportunity(opportunity(&format!("r{round} c{i}")), None).await })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap().unwrap(), CreateOutcome::Created);
        }
        largest_wal = largest_wal.max(size(&wal));
    }
    // The writer's commits only append to the log; the checkpointer copies them into the
    // database file (at most every 100 ms) so that the log is reused instead of growing.
    let started = std::time::Instant::now();
    while size(&path) <= empty + 1_000_000 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let file = size(&path);
    assert!(file > empty + 1_000_000, "2,000 creates reached the database file: {empty} -> {file} bytes");
    assert!(largest_wal < 16 << 20, "the log stayed small: {largest_wal} bytes at the most");
    assert_eq!(stored(&db).await, 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_key_stored_by_an_earlier_version_still_replays() {
    let test_db = TestDatabase::new();
    let timeout = Duration::from_secs(10);
    let db = open(&test_db, timeout);
    let o = opportunity("keyed");
    let id = o.id;
    db.create_opportunity(o, None).await.unwrap();
    let key = |request_hash: &str, legacy_hash: Option<&str>| {
        Some(ChangeKey {
            workspace_id: Uuid::nil(),
            key: "k".into(),
            request_hash: request_hash.into(),
            legacy_hash: legacy_hash.map(Into::into),
        })
    };
    // Stored by an earlier version, under the fingerprint it made.
    let first = retitle_keyed(&db, id, "once".into(), timeout, key("old form", None)).await.unwrap();
    let Changed::Done(answer) = first else { panic!("{first:?}") };
    // This version makes another fingerprint of the same request, and knows the old form.
    let again = retitle_keyed(&db, id, "once".into(), timeout, key("new form", Some("old form"))).await.unwrap();
    assert!(matches!(&again, Changed::Replayed(stored) if *stored == answer), "{again:?}");
    // Another request under the same key is still a reuse.
    let other = retitle_keyed(&db, id, "twice".into(), timeout, key("other", Some("other old"))).await.unwrap();
    assert!(matches!(other, Changed::KeyReused), "{other:?}");
    assert_eq!(title_and_version(&db, id).await, ("once".into(), 2), "written once");
}

/// A database whose `Database::run` calls share one pooled connection (`get`'s groups read
/// through it), and a way to hold that connection from outside the reads.
fn open_one_connection(db: &TestDatabase, timeout: Duration) -> Database {
    Database::connect(DatabaseUrl::parse(&db.url).unwrap(), PoolOptions { size: Some(1), timeout }).unwrap()
}

/// Takes the one connection of [`open_one_connection`]'s database until the returned sender is
/// used or dropped; returns once it is taken.
async fn hold_the_connection(db: &Database) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (taken, is_taken) = tokio::sync::oneshot::channel();
    let call = db.clone();
    let holder = tokio::spawn(async move {
        let _ = call
            .run(move |_| {
                let _ = taken.send(());
                let _ = held.recv();
                Ok(())
            })
            .await;
    });
    is_taken.await.expect("the holder runs");
    (release, holder)
}

/// Makes the stored row `id` one that does not read back (a stage no version writes), past the
/// table's CHECK.
fn corrupt_stage(test_db: &TestDatabase, id: Uuid) {
    let update = format!("UPDATE opportunities SET stage = 'bogus' WHERE id = '{id}'");
    match DatabaseUrl::parse(&test_db.url).unwrap() {
        DatabaseUrl::Postgres(url) => diesel::PgConnection::establish(&url)
            .unwrap()
            .batch_execute(&format!("ALTER TABLE opportunities DROP CONSTRAINT opportunities_stage_check; {update}"))
            .unwrap(),
        DatabaseUrl::Sqlite(path) => diesel::SqliteConnection::establish(path.to_str().unwrap())
            .unwrap()
            .batch_execute(&format!("PRAGMA ignore_check_constraints = ON; {update}"))
            .unwrap(),
    }
}

/// Reads by id that queue while a read is under way go in as one group (`src/db/reads.rs`), and
/// each caller gets what it asked for: its own opportunity (also when others in the group ask
/// for the same one), `None` for an id that is not stored, and a failure for a stored row that
/// does not read back, which fails no other caller of the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_that_queue_together_each_get_their_own_answer() {
    let test_db = TestDatabase::new();
    let db = open_one_connection(&test_db, Duration::from_secs(10));
    let mut stored = Vec::new();
    for i in 0..6 {
        let o = opportunity(&format!("read {i}"));
        assert_eq!(db.create_opportunity(o.clone(), None).await.unwrap(), CreateOutcome::Created);
        stored.push(o);
    }
    let broken = stored.pop().unwrap().id;
    corrupt_stage(&test_db, broken);
    let missing: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();

    let (release, holder) = hold_the_connection(&db).await;
    // The first read starts a group, which waits for the connection; every read after it queues
    // for the next group.
    let first_id = stored[0].id;
    let first = {
        let call = db.clone();
        enqueue(async move { call.get_opportunity(first_id).await }).await
    };
    let mut asked = Vec::new();
    // Each stored id twice, the broken one twice, each missing one once.
    for &not_stored in &missing[..2] {
        asked.extend(stored.iter().map(|o| o.id));
        asked.extend([broken, not_stored]);
    }
    asked.push(missing[2]);
    let mut calls = Vec::new();
    for &id in &asked {
        let call = db.clone();
        calls.push(enqueue(async move { call.get_opportunity(id).await }).await);
    }
    release.send(()).unwrap();
    holder.await.unwrap();

    assert_eq!(first.await.unwrap().unwrap().expect("stored").title, "read 0");
    for (id, call) in asked.iter().zip(calls) {
        let answer = call.await.unwrap();
        if *id == broken {
            assert!(matches!(&answer, Err(DbError::Query(_))), "the broken row: {answer:?}");
        } else if let Some(o) = stored.iter().find(|o| o.id == *id) {
            let read = answer.unwrap_or_else(|e| panic!("{id}: {e}")).expect("stored");
            assert_eq!((read.id, &read.title), (o.id, &o.title));
        } else {
            assert!(matches!(answer, Ok(None)), "{id} is not stored: {answer:?}");
        }
    }
}

/// Reads that wait for the database past its timeout are answered SERVICE_UNAVAILABLE within
/// it, and the reads after them are read again once the database answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_that_wait_past_the_timeout_are_refused_and_later_reads_go_on() {
    let test_db = TestDatabase::new();
    let timeout = Duration::from_millis(400);
    let db = open_one_connection(&test_db, timeout);
    let o = opportunity("read after a stall");
    assert_eq!(db.create_opportunity(o.clone(), None).await.unwrap(), CreateOutcome::Created);

    let (release, holder) = hold_the_connection(&db).await;
    let started = std::time::Instant::now();
    let mut calls = Vec::new();
    for _ in 0..5 {
        let call = db.clone();
        let id = o.id;
        calls.push(enqueue(async move { call.get_opportunity(id).await }).await);
    }
    for call in calls {
        let answer = call.await.unwrap();
        assert!(matches!(&answer, Err(DbError::Unavailable(m)) if m.contains("did not answer")), "{answer:?}");
    }
    assert!(started.elapsed() < timeout * 3, "answered after {:?}", started.elapsed());
    release.send(()).unwrap();
    holder.await.unwrap();
    let read = db.get_opportunity(o.id).await.expect("the database answers again").expect("stored");
    assert_eq!(read.title, o.title);
}

//! Queries of opportunities and of the idempotency keys of their creates.

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use uuid::Uuid;

use super::events::{self, NewEvent};
use super::prepared::{FeedPositions, PgAppendChanges, PgWriteChangedRows, sqlite_write_changed};
use super::schema::{idempotency_keys as k, opportunities as t};
use super::types::{Id, Instant, Labels};
use super::{DbConn, DbError};
use crate::domain::opportunity::{
    LostReasonCategory, Money, Opportunity, PipelineType, Priority, Source, Stage, VisibilityMode,
};

/// An idempotency key with what the first call under it answered.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    /// The caller's key, unique per workspace.
    pub key: String,
    /// A fingerprint of the validated params, to tell a replay from a reuse.
    pub request_hash: String,
    /// The JSON answer, sent again on a replay.
    pub response: String,
}

/// What a create did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// A new row was committed.
    Created,
    /// The key was used before with the same params: the stored answer.
    Replayed(String),
    /// The key was used before with other params.
    KeyReused,
}

// Every column bound, `None` as NULL: SQLite has no DEFAULT keyword, and only so does diesel
// make one multi-row INSERT of a batch (`insert_in_chunks!`) whose SQL is always the same for N
// rows, so that it is kept prepared. A change on SQLite writes its columns too
// (`prepared::SqliteWriteChanged`).
#[derive(Insertable)]
#[diesel(table_name = t, treat_none_as_default_value = false, treat_none_as_null = true)]
pub(super) struct Row {
    pub(super) id: Id,
    pub(super) workspace_id: Id,
    pub(super) customer_id: Id,
    pub(super) primary_contact_id: Option<Id>,
    pub(super) site_id: Option<Id>,
    pub(super) title: String,
    pub(super) stage: &'static str,
    pub(super) pipeline_type: &'static str,
    pub(super) source: Option<&'static str>,
    pub(super) estimated_value_cents: Option<i64>,
    pub(super) expected_close_date: Option<Instant>,
    pub(super) probability: Option<i32>,
    pub(super) solution_families: Labels,
    pub(super) scope_summary: Option<String>,
    pub(super) competitor_notes: Option<String>,
    pub(super) win_loss_reason: Option<String>,
    pub(super) next_step_description: Option<String>,
    pub(super) next_step_date: Option<Instant>,
    pub(super) bid_due_date: Option<Instant>,
    pub(super) budget_confirmed: bool,
    pub(super) priority: Option<&'static str>,
    pub(super) lost_reason_category: Option<&'static str>,
    pub(super) technical_requirements: Option<String>,
    pub(super) owner_user_id: Id,
    pub(super) visibility_mode: &'static str,
    pub(super) created_by: Id,
    pub(super) created_at: Instant,
    pub(super) updated_at: Instant,
    pub(super) version: i32,
    pub(super) archived_at: Option<Instant>,
}

impl Row {
    /// Owned, so that diesel can keep the prepared INSERT of a fixed number of rows.
    pub(super) fn new(o: &Opportunity) -> Self {
        Self {
            id: Id(o.id),
            workspace_id: Id(o.workspace_id),
            customer_id: Id(o.customer_id),
            primary_contact_id: o.primary_contact_id.map(Id),
            site_id: o.site_id.map(Id),
            title: o.title.clone(),
            stage: o.stage.as_str(),
            pipeline_type: o.pipeline_type.as_str(),
            source: o.source.map(|s| s.as_str()),
            estimated_value_cents: o.estimated_value.map(|m| m.cents()),
            expected_close_date: o.expected_close_date.map(Instant),
            probability: o.probability.map(i32::from),
            solution_families: Labels(o.solution_families.clone()),
            scope_summary: o.scope_summary.clone(),
            competitor_notes: o.competitor_notes.clone(),
            win_loss_reason: o.win_loss_reason.clone(),
            next_step_description: o.next_step_description.clone(),
            next_step_date: o.next_step_date.map(Instant),
            bid_due_date: o.bid_due_date.map(Instant),
            budget_confirmed: o.budget_confirmed,
            priority: o.priority.map(|p| p.as_str()),
            lost_reason_category: o.lost_reason_category.map(|l| l.as_str()),
            technical_requirements: o.technical_requirements.clone(),
            owner_user_id: Id(o.owner_user_id),
            visibility_mode: o.visibility_mode.as_str(),
            created_by: Id(o.created_by),
            created_at: Instant(o.created_at),
            updated_at: Instant(o.updated_at),
            version: o.version,
            archived_at: o.archived_at.map(Instant),
        }
    }
}

/// Whether an error is the unique violation of a concurrent call that took the same key first.
pub(super) fn is_unique_violation(e: &DieselError) -> bool {
    matches!(e, DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _))
}

fn replay_or_reuse(stored: Option<(String, String)>, record: &IdempotencyRecord) -> Option<CreateOutcome> {
    stored.map(
        |(hash, response)| {
            if hash == record.request_hash { CreateOutcome::Replayed(response) } else { CreateOutcome::KeyReused }
        },
    )
}

fn create_postgres(
    conn: &mut PgConnection,
    o: &Opportunity,
    key: Option<&IdempotencyRecord>,
    event: &NewEvent,
    deadline: std::time::Instant,
) -> QueryResult<CreateOutcome> {
    conn.transaction(|conn| {
        let outcome = insert_one(DbConn::Postgres(conn), o, key)?;
        if outcome == CreateOutcome::Created {
            events::append(&mut DbConn::Postgres(conn), vec![event.clone()])?;
        }
        // The caller stops waiting at the deadline and answers SERVICE_UNAVAILABLE: past it,
        // roll back rather than store a create that was answered as not done.
        if std::time::Instant::now() >= deadline {
            return Err(DieselError::RollbackTransaction);
        }
        Ok(outcome)
    })
}

/// Stores a group of creates together on PostgreSQL, in one transaction: the creates without a
/// key as one multi-row INSERT, the keyed ones each looked up and inserted as [`create_postgres`]
/// would. The transaction is rolled back when `deadline` passed before COMMIT. `outcomes`
/// receives one outcome per create, in order, once its statements ran, so that a caller who
/// loses the connection during COMMIT can still answer once it finds the rows stored. Any error
/// leaves nothing stored: the caller falls back to one create at a time.
pub(super) fn create_postgres_group(
    conn: &mut PgConnection,
    group: &[(&Opportunity, Option<&IdempotencyRecord>, &NewEvent)],
    deadline: std::time::Instant,
    outcomes: &mut Vec<CreateOutcome>,
) -> QueryResult<()> {
    outcomes.clear();
    let keyless: Vec<Row> = group.iter().filter(|(_, key, _)| key.is_none()).map(|(o, _, _)| Row::new(o)).collect();
    conn.transaction(|conn| {
        if !keyless.is_empty() {
            insert_in_chunks!(conn, t::table, keyless)?;
        }
        for (o, key, _) in group {
            outcomes.push(match key {
                None => CreateOutcome::Created,
                Some(_) => insert_one(DbConn::Postgres(conn), o, *key)?,
            });
        }
        // The events of what was stored, last (this takes the position lock until COMMIT).
        let created: Vec<NewEvent> = group
            .iter()
            .zip(outcomes.iter())
            .filter(|(_, outcome)| **outcome == CreateOutcome::Created)
            .map(|((_, _, event), _)| (*event).clone())
            .collect();
        events::append(&mut DbConn::Postgres(conn), created)?;
        if std::time::Instant::now() >= deadline {
            return Err(DieselError::RollbackTransaction);
        }
        Ok(())
    })
}

/// Inserts one opportunity inside the caller's transaction, with its idempotency key when there
/// is one: a key seen before replays its answer (or reports a reuse with other params) and
/// nothing is written.
fn insert_one(conn: DbConn<'_>, o: &Opportunity, key: Option<&IdempotencyRecord>) -> QueryResult<CreateOutcome> {
    on_either!(conn, c => {
        if let Some(record) = key {
            let stored = k::table
                .find((Id(o.workspace_id), record.key.as_str()))
                .select((k::request_hash, k::response))
                .first::<(String, String)>(c)
                .optional()?;
            if let Some(outcome) = replay_or_reuse(stored, record) {
                return Ok(outcome);
            }
        }
        diesel::insert_into(t::table).values(Row::new(o)).execute(c)?;
        if let Some(record) = key {
            diesel::insert_into(k::table)
                .values((
                    k::workspace_id.eq(Id(o.workspace_id)),
                    k::key.eq(record.key.as_str()),
                    k::request_hash.eq(record.request_hash.as_str()),
                    k::opportunity_id.eq(Id(o.id)),
                    k::response.eq(record.response.as_str()),
                    k::created_at.eq(Instant(o.created_at)),
                ))
                .execute(c)?;
        }
        Ok(CreateOutcome::Created)
    })
}

/// Inserts opportunities without keys as one multi-row INSERT, in a savepoint of the caller's
/// transaction: all are stored or, on an error, none.
pub(super) fn insert_sqlite_batch(conn: &mut SqliteConnection, batch: &[&Opportunity]) -> QueryResult<()> {
    let rows: Vec<Row> = batch.iter().map(|o| Row::new(o)).collect();
    conn.transaction(|conn| insert_in_chunks!(conn, t::table, rows))
}

/// Inserts one opportunity (and its key) in a savepoint of the caller's transaction.
pub(super) fn create_sqlite(
    conn: &mut SqliteConnection,
    o: &Opportunity,
    key: Option<&IdempotencyRecord>,
) -> QueryResult<CreateOutcome> {
    // Runs inside the group transaction of the SQLite writer (src/db/writer.rs), as a savepoint:
    // a create that fails is rolled back alone.
    conn.transaction(|conn| insert_one(DbConn::Sqlite(conn), o, key))
}

/// Inserts an opportunity in one transaction, with its idempotency key when there is one: the
/// key's earlier answer is replayed, or a reuse with other params reported, and nothing written.
/// When a concurrent call commits the same key first, this call's transaction is rolled back
/// whole and the key looked up again, so one key never makes two rows.
pub fn create(
    conn: DbConn<'_>,
    o: &Opportunity,
    key: Option<&IdempotencyRecord>,
    event: &NewEvent,
    deadline: std::time::Instant,
) -> Result<CreateOutcome, DbError> {
    let run = |conn: &mut DbConn<'_>| match conn {
        DbConn::Postgres(c) => create_postgres(c, o, key, event, deadline),
        // IMMEDIATE takes the write lock up front: the key lookup and the inserts see one state.
        DbConn::Sqlite(c) => c.immediate_transaction(|c| {
            let outcome = create_sqlite(c, o, key)?;
            if outcome == CreateOutcome::Created {
                events::append(&mut DbConn::Sqlite(c), vec![event.clone()])?;
            }
            Ok(outcome)
        }),
    };
    let mut conn = conn;
    match run(&mut conn) {
        Err(e) if key.is_some() && is_unique_violation(&e) => run(&mut conn).map_err(DbError::classify),
        Err(DieselError::RollbackTransaction) => {
            Err(DbError::Unavailable("the database did not answer before the deadline".into()))
        }
        other => other.map_err(DbError::classify),
    }
}

/// Whether an opportunity with this id is stored on PostgreSQL: after a connection was lost
/// around a commit, this tells whether the commit happened. (The SQLite writer never loses its
/// connection that way: it answers from the commit's own result.)
pub(super) fn exists_postgres(conn: &mut PgConnection, id: Uuid) -> Result<bool, DbError> {
    diesel::select(diesel::dsl::exists(t::table.find(Id(id)))).get_result(conn).map_err(DbError::classify)
}

/// Deletes idempotency keys created before `cutoff`; returns how many.
pub fn purge_idempotency_keys(conn: DbConn<'_>, cutoff: DateTime<Utc>) -> Result<usize, DbError> {
    on_either!(conn, c => diesel::delete(k::table.filter(k::created_at.lt(Instant(cutoff)))).execute(c))
        .map_err(DbError::classify)
}

/// How many opportunities a workspace holds (all workspaces when `None`).
pub fn count(conn: DbConn<'_>, workspace: Option<Uuid>) -> Result<i64, DbError> {
    on_either!(conn, c => match workspace {
        Some(ws) => t::table.filter(t::workspace_id.eq(Id(ws))).count().get_result(c),
        None => t::table.count().get_result(c),
    })
    .map_err(DbError::classify)
}

// ---------------------------------------------------------------------------------------------
// Reading and changing stored opportunities (CONTRACT.md §8)
// ---------------------------------------------------------------------------------------------

/// A stored row, as a `SELECT *` returns it (`QueryableByName`, for the list's SQL) or as the
/// query builder selects it (`Selectable`: a statement diesel prepares once per connection and
/// keeps), on either backend.
#[derive(QueryableByName, Queryable, Selectable)]
#[diesel(table_name = t, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub(super) struct Stored {
    id: Id,
    workspace_id: Id,
    customer_id: Id,
    primary_contact_id: Option<Id>,
    site_id: Option<Id>,
    title: String,
    stage: String,
    pipeline_type: String,
    source: Option<String>,
    estimated_value_cents: Option<i64>,
    expected_close_date: Option<Instant>,
    probability: Option<i32>,
    solution_families: Labels,
    scope_summary: Option<String>,
    competitor_notes: Option<String>,
    win_loss_reason: Option<String>,
    next_step_description: Option<String>,
    next_step_date: Option<Instant>,
    bid_due_date: Option<Instant>,
    budget_confirmed: bool,
    priority: Option<String>,
    lost_reason_category: Option<String>,
    technical_requirements: Option<String>,
    owner_user_id: Id,
    visibility_mode: String,
    created_by: Id,
    created_at: Instant,
    updated_at: Instant,
    version: i32,
    archived_at: Option<Instant>,
}

/// A stored value this code cannot read: the row was not written by it (or was altered by hand).
fn corrupt(what: &str, value: &str) -> DbError {
    DbError::Query(DieselError::DeserializationError(format!("stored {what} {value:?} is not valid").into()))
}

fn stored_enum<T>(what: &str, value: &str, parse: fn(&str) -> Option<T>) -> Result<T, DbError> {
    parse(value).ok_or_else(|| corrupt(what, value))
}

fn stored_optional_enum<T>(
    what: &str,
    value: Option<String>,
    parse: fn(&str) -> Option<T>,
) -> Result<Option<T>, DbError> {
    value.map(|v| stored_enum(what, &v, parse)).transpose()
}

impl TryFrom<Stored> for Opportunity {
    type Error = DbError;
    fn try_from(r: Stored) -> Result<Self, DbError> {
        let stage = stored_enum("stage", &r.stage, Stage::parse)?;
        let probability = match r.probability {
            Some(p) => Some(i16::try_from(p).map_err(|_| corrupt("probability", &p.to_string()))?),
            None => None,
        };
        let instant = |i: Option<Instant>| i.map(|i| i.0);
        Ok(Opportunity {
            id: r.id.0,
            workspace_id: r.workspace_id.0,
            customer_id: r.customer_id.0,
            primary_contact_id: r.primary_contact_id.map(|i| i.0),
            site_id: r.site_id.map(|i| i.0),
            title: r.title,
            stage,
            pipeline_type: stored_enum("pipeline type", &r.pipeline_type, PipelineType::parse)?,
            source: stored_optional_enum("source", r.source, Source::parse)?,
            estimated_value: r.estimated_value_cents.map(Money::from_cents),
            expected_close_date: instant(r.expected_close_date),
            probability,
            solution_families: r.solution_families.0,
            scope_summary: r.scope_summary,
            competitor_notes: r.competitor_notes,
            win_loss_reason: r.win_loss_reason,
            next_step_description: r.next_step_description,
            next_step_date: instant(r.next_step_date),
            bid_due_date: instant(r.bid_due_date),
            budget_confirmed: r.budget_confirmed,
            priority: stored_optional_enum("priority", r.priority, Priority::parse)?,
            lost_reason_category: stored_optional_enum(
                "lost reason category",
                r.lost_reason_category,
                LostReasonCategory::parse,
            )?,
            technical_requirements: r.technical_requirements,
            owner_user_id: r.owner_user_id.0,
            visibility_mode: stored_enum("visibility mode", &r.visibility_mode, VisibilityMode::parse)?,
            created_by: r.created_by.0,
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
            version: r.version,
            is_closed: stage.is_closed(),
            is_won: stage == Stage::Won,
            archived_at: instant(r.archived_at),
        })
    }
}

/// The opportunity with this id, in any workspace (who may read it is for the caller to say).
pub fn get(conn: DbConn<'_>, id: Uuid) -> Result<Option<Opportunity>, DbError> {
    // The query builder's statements are prepared once per connection and kept.
    on_either!(conn, c => t::table.find(Id(id)).select(Stored::as_select()).get_result(c).optional())
        .map_err(DbError::classify)?
        .map(Opportunity::try_from)
        .transpose()
}

/// A row of [`get_many`]: its id, and the opportunity or why the stored row does not read back.
pub type ReadById = (Uuid, Result<Opportunity, DbError>);

/// The opportunities among `ids` that exist, in any order, each read on its own (a stored row
/// that does not read back fails only itself): on PostgreSQL with one statement (`id =
/// ANY($1)`, prepared once) or, for one id, [`get`]'s; on SQLite with [`get`]'s statement once
/// per id (there is no trip to save, and an `IN` list would be compiled anew for each count of
/// ids).
pub fn get_many(conn: DbConn<'_>, ids: &[Uuid]) -> Result<Vec<ReadById>, DbError> {
    let rows: Vec<Stored> = match conn {
        DbConn::Postgres(c) if ids.len() > 1 => t::table
            .filter(t::id.eq_any(ids.iter().copied().map(Id)))
            .select(Stored::as_select())
            .load(c)
            .map_err(DbError::classify)?,
        // One id on PostgreSQL, any number on SQLite: the one-row statement of `get`.
        mut conn => {
            let mut rows = Vec::with_capacity(ids.len());
            for &id in ids {
                let row = on_either!(conn.reborrow(), c => t::table
                    .find(Id(id))
                    .select(Stored::as_select())
                    .get_result(c)
                    .optional());
                rows.extend(row.map_err(DbError::classify)?);
            }
            rows
        }
    };
    Ok(rows.into_iter().map(|r| (r.id.0, Opportunity::try_from(r))).collect())
}

/// What a change decided, given the stored opportunity.
#[derive(Debug)]
pub enum Decision<E> {
    /// Store this opportunity in place of the current one, and record the event.
    Write(Opportunity, Box<NewEvent>),
    /// Nothing to write: answer the opportunity as stored.
    Unchanged(Opportunity),
    /// Refused (not found, forbidden, a conflict, a rule): nothing is written.
    Refuse(E),
}

/// What a change did.
#[derive(Debug)]
pub enum Changed<E> {
    /// Written (or, with [`Decision::Unchanged`], left as it was); the answer as JSON.
    Done(String),
    /// The key was used before with the same params: the stored answer.
    Replayed(String),
    /// The key was used before with other params.
    KeyReused,
    /// The decision refused.
    Refused(E),
}

/// An idempotency key of a change, scoped to the workspace the call acts in.
#[derive(Debug, Clone)]
pub struct ChangeKey {
    pub workspace_id: Uuid,
    pub key: String,
    pub request_hash: String,
    /// The fingerprint an earlier version stored for the same request, which replays too.
    pub legacy_hash: Option<String>,
}

/// A written change whose event waits for the end of its transaction: [`finish_changes`]
/// appends the events of every change of a group at once, taking the feed's position lock last
/// (as a group of creates does), and then marks which ordering values each change moved.
#[derive(Debug)]
pub struct Deferred {
    /// The opportunity as the change leaves it.
    row: Opportunity,
    event: NewEvent,
    /// The change moved `expectedCloseDate` (the list cursors' `close_pos`).
    close_moved: bool,
    /// The change moved `estimatedValue` (`value_pos`).
    value_moved: bool,
    /// The change moved `visibilityMode` (SQLite sets that column only then).
    visibility_moved: bool,
}

/// Reads the opportunity `id` under a write lock, lets `decide` say what becomes of it (it sees
/// `None` when there is no such opportunity), and writes the result with the idempotency key's
/// answer and its event in one savepoint of the SQLite writer's group transaction. A key seen
/// before replays (or refuses a reuse) before anything is decided. Past `deadline` the savepoint
/// is rolled back (the caller has answered SERVICE_UNAVAILABLE by then).
pub fn change_sqlite<E>(
    conn: &mut SqliteConnection,
    id: Uuid,
    key: Option<&ChangeKey>,
    deadline: std::time::Instant,
    decide: &dyn Fn(Option<Opportunity>) -> Decision<E>,
) -> Result<Changed<E>, DbError> {
    let mut outcome = None;
    // The group transaction holds the write lock (IMMEDIATE): the reads and the write see one
    // state, and no other writer can store the same key meanwhile.
    let result = conn.transaction(|c| {
        let current = get(DbConn::Sqlite(c), id).map_err(into_diesel)?;
        let mut deferred = Vec::with_capacity(1);
        outcome = Some(change_locked(DbConn::Sqlite(c), current, key, decide, &mut deferred).map_err(into_diesel)?);
        finish_changes(DbConn::Sqlite(c), &deferred)?;
        // Past the deadline the caller has answered SERVICE_UNAVAILABLE (the write lock may
        // have been held elsewhere): roll back rather than store it.
        if std::time::Instant::now() >= deadline {
            return Err(DieselError::RollbackTransaction);
        }
        Ok(())
    });
    match result {
        Ok(()) => Ok(outcome.expect("set when the transaction commits")),
        Err(DieselError::RollbackTransaction) => {
            Err(DbError::Unavailable("the database did not answer before the deadline".into()))
        }
        Err(e) => Err(from_diesel(e)),
    }
}

/// The opportunities of a group of changes on PostgreSQL, read under their row locks, as each
/// change of the group leaves them: [`lock_postgres`] fills it, and each change sees (and
/// replaces) the state the change before it left.
pub(super) type Locked = std::collections::HashMap<Uuid, Opportunity>;

/// Reads the opportunities `ids` (sorted) under their row locks, with one statement, taken in
/// id order (PostgreSQL locks the rows of `ORDER BY … FOR UPDATE` in the order it sorts them),
/// so that two groups, of this process or another, never wait for each other in a cycle.
pub(super) fn lock_postgres(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Locked, DbError> {
    let rows: Vec<Stored> = t::table
        .filter(t::id.eq_any(ids.iter().copied().map(Id)))
        .order(t::id)
        .for_update()
        .select(Stored::as_select())
        .load(conn)
        .map_err(DbError::classify)?;
    rows.into_iter().map(|r| Opportunity::try_from(r).map(|o| (o.id, o))).collect()
}

/// Changes the opportunity `id` as `decide` says, inside the PostgreSQL writer's group
/// transaction (`pg_writer.rs`), on the state `locked` holds for it (read under its row lock by
/// [`lock_postgres`]). The new state and the event go to `deferred`: [`finish_changes`] writes
/// both before COMMIT.
pub(super) fn change_postgres<E>(
    conn: &mut PgConnection,
    locked: &mut Locked,
    id: Uuid,
    key: Option<&ChangeKey>,
    decide: &dyn Fn(Option<Opportunity>) -> Decision<E>,
    deferred: &mut Vec<Deferred>,
) -> Result<Changed<E>, DbError> {
    // The row is locked already: a concurrent call with the same key waited for that lock, and
    // now sees the key it stored (READ COMMITTED reads what committed before each statement).
    let current = locked.get(&id).cloned();
    let written = deferred.len();
    let changed = change_locked(DbConn::Postgres(conn), current, key, decide, deferred)?;
    if let Some(change) = deferred.get(written) {
        locked.insert(id, change.row.clone());
    }
    Ok(changed)
}

/// Writes each changed opportunity of `deferred`, as its last change of the group leaves it,
/// appends the events (in order), and gives each row the feed positions of its changes:
/// `updated_pos` always, `close_pos` and `value_pos` where a change moved that ordering value.
/// Call it last before COMMIT: it takes the position lock.
///
/// On PostgreSQL the rows are written before the lock is taken, with one statement, and only
/// their positions under it, by the statement that takes the positions and appends the events
/// (`PgAppendChanges`): the rows' statement updates every index of the table and took 1.3 ms
/// of the 2.1 ms a group of ten held the lock (`bench/run`'s updates), while the positions'
/// columns are in no index. The row's second version is written by the
/// transaction that wrote its first, and nobody else ever sees the first. On SQLite, whose one
/// writer takes no lock from another, each row is written once, with its positions.
pub(super) fn finish_changes(conn: DbConn<'_>, deferred: &[Deferred]) -> QueryResult<()> {
    if deferred.is_empty() {
        return Ok(());
    }
    let events: Vec<NewEvent> = deferred.iter().map(|d| d.event.clone()).collect();
    // One write per opportunity, with its last state and the offsets in the group of its last
    // changes (an opportunity may change twice in one group); the group's first position is
    // known once the lock is taken.
    let mut marks: Vec<Mark<'_>> = Vec::with_capacity(deferred.len());
    for (d, offset) in deferred.iter().zip(0..) {
        let mark = match marks.iter_mut().find(|m| m.row.id == d.row.id) {
            Some(mark) => mark,
            None => {
                marks.push(Mark { row: &d.row, updated: offset, close: None, value: None, visibility: false });
                marks.last_mut().expect("just pushed")
            }
        };
        mark.row = &d.row;
        mark.updated = offset;
        if d.close_moved {
            mark.close = Some(offset);
        }
        if d.value_moved {
            mark.value = Some(offset);
        }
        mark.visibility |= d.visibility_moved;
    }
    let n = deferred.len() as i64;
    match conn {
        DbConn::Postgres(c) => {
            // The rows of the whole group in one statement: PostgreSQL reads them from JSON
            // into the table's own row type.
            let rows: Vec<PgChangedRow<'_>> = marks.iter().map(PgChangedRow::new).collect();
            let rows = serde_json::to_string(&rows).map_err(|e| DieselError::SerializationError(e.into()))?;
            PgWriteChangedRows(rows).execute(c)?;
            // The positions, the events and the rows' positions in one statement, which adds the
            // group's first position to each offset (`at(0)`).
            PgAppendChanges::new(events, marks.iter().map(|m| (m.row.id, m.at(0))).collect()).get_result::<i64>(c)?;
        }
        DbConn::Sqlite(c) => {
            let first = events::append(&mut DbConn::Sqlite(c), events)? - n + 1;
            for mark in marks {
                let (updated, close, value) = mark.at(first);
                // Kept prepared: diesel's own UPDATE was compiled anew for every change (about
                // 7% of the writer's time under `bench/run`'s updates). Sets the indexed
                // columns only where the group changed them.
                sqlite_write_changed(c, Row::new(mark.row), updated, close, value, mark.visibility)?;
            }
        }
    }
    Ok(())
}

/// An opportunity a group of changes writes: its last state, and the offsets in the group of
/// its last change and of its last changes of the ordering values that can change.
struct Mark<'a> {
    row: &'a Opportunity,
    updated: i64,
    close: Option<i64>,
    value: Option<i64>,
    /// A change of the group moved the visibility.
    visibility: bool,
}

impl Mark<'_> {
    /// The feed positions `updated_pos`, `close_pos` and `value_pos` (`None`: unchanged) of a
    /// group whose first event is at `first`.
    fn at(&self, first: i64) -> FeedPositions {
        (first + self.updated, self.close.map(|c| first + c), self.value.map(|v| first + v))
    }
}

/// A changed row on PostgreSQL as `json_populate_recordset` reads it into the table's row type
/// (`finish_changes`): the columns' names, each value in the column type's text form.
#[derive(serde::Serialize)]
struct PgChangedRow<'a> {
    id: Uuid,
    customer_id: Uuid,
    primary_contact_id: Option<Uuid>,
    site_id: Option<Uuid>,
    title: &'a str,
    stage: &'static str,
    pipeline_type: &'static str,
    source: Option<&'static str>,
    estimated_value_cents: Option<i64>,
    expected_close_date: Option<String>,
    probability: Option<i16>,
    solution_families: &'a [String],
    scope_summary: Option<&'a str>,
    competitor_notes: Option<&'a str>,
    win_loss_reason: Option<&'a str>,
    next_step_description: Option<&'a str>,
    next_step_date: Option<String>,
    bid_due_date: Option<String>,
    budget_confirmed: bool,
    priority: Option<&'static str>,
    lost_reason_category: Option<&'static str>,
    technical_requirements: Option<&'a str>,
    owner_user_id: Uuid,
    visibility_mode: &'static str,
    updated_at: String,
    version: i32,
    archived_at: Option<String>,
}

impl<'a> PgChangedRow<'a> {
    fn new(mark: &Mark<'a>) -> Self {
        let o = mark.row;
        // Microseconds, as PostgreSQL keeps them and as the answer shows them.
        let instant = |i: &DateTime<Utc>| i.to_rfc3339_opts(SecondsFormat::Micros, true);
        Self {
            id: o.id,
            customer_id: o.customer_id,
            primary_contact_id: o.primary_contact_id,
            site_id: o.site_id,
            title: &o.title,
            stage: o.stage.as_str(),
            pipeline_type: o.pipeline_type.as_str(),
            source: o.source.map(|s| s.as_str()),
            estimated_value_cents: o.estimated_value.map(|m| m.cents()),
            expected_close_date: o.expected_close_date.as_ref().map(instant),
            probability: o.probability,
            solution_families: &o.solution_families,
            scope_summary: o.scope_summary.as_deref(),
            competitor_notes: o.competitor_notes.as_deref(),
            win_loss_reason: o.win_loss_reason.as_deref(),
            next_step_description: o.next_step_description.as_deref(),
            next_step_date: o.next_step_date.as_ref().map(instant),
            bid_due_date: o.bid_due_date.as_ref().map(instant),
            budget_confirmed: o.budget_confirmed,
            priority: o.priority.map(|p| p.as_str()),
            lost_reason_category: o.lost_reason_category.map(|l| l.as_str()),
            technical_requirements: o.technical_requirements.as_deref(),
            owner_user_id: o.owner_user_id,
            visibility_mode: o.visibility_mode.as_str(),
            updated_at: instant(&o.updated_at),
            version: o.version,
            archived_at: o.archived_at.as_ref().map(instant),
        }
    }
}

/// Carries a [`DbError`] through diesel's transaction closure and back.
pub(super) fn into_diesel(e: DbError) -> DieselError {
    match e {
        DbError::Query(e) => e,
        DbError::Unavailable(message) => DieselError::QueryBuilderError(Box::new(Unavailable(message))),
    }
}

pub(super) fn from_diesel(e: DieselError) -> DbError {
    match e {
        DieselError::QueryBuilderError(inner) if inner.is::<Unavailable>() => DbError::Unavailable(inner.to_string()),
        e => DbError::classify(e),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unavailable(String);

/// The part of a change that runs under the row lock: replays a key seen before, or decides and
/// writes the row and the key's answer, leaving the event in `deferred`.
fn change_locked<E>(
    mut conn: DbConn<'_>,
    current: Option<Opportunity>,
    key: Option<&ChangeKey>,
    decide: &dyn Fn(Option<Opportunity>) -> Decision<E>,
    deferred: &mut Vec<Deferred>,
) -> Result<Changed<E>, DbError> {
    if let Some(key) = key
        && let Some((hash, response)) = stored_key(&mut conn, key)?
    {
        let same = hash == key.request_hash || key.legacy_hash.as_deref() == Some(hash.as_str());
        return Ok(if same { Changed::Replayed(response) } else { Changed::KeyReused });
    }
    let before = current.clone();
    let (answer, response) = match decide(current) {
        Decision::Refuse(e) => return Ok(Changed::Refused(e)),
        Decision::Unchanged(o) => {
            let response = serde_json::to_string(&o).expect("an opportunity serializes");
            (o, response)
        }
        Decision::Write(o, e) => {
            let before = before.as_ref().expect("a change follows a read");
            // A write's answer was serialized once, for its event; it is also the key's answer.
            // The row itself is written by `finish_changes`, with its feed positions.
            let response = e.opportunity.clone();
            deferred.push(Deferred {
                close_moved: before.expected_close_date != o.expected_close_date,
                value_moved: before.estimated_value != o.estimated_value,
                visibility_moved: before.visibility_mode != o.visibility_mode,
                row: o.clone(),
                event: *e,
            });
            (o, response)
        }
    };
    if let Some(key) = key {
        store_key(&mut conn, key, answer.id, &response)?;
    }
    Ok(Changed::Done(response))
}

fn stored_key(conn: &mut DbConn<'_>, key: &ChangeKey) -> Result<Option<(String, String)>, DbError> {
    on_either!(conn, c => k::table
        .find((Id(key.workspace_id), key.key.as_str()))
        .select((k::request_hash, k::response))
        .first::<(String, String)>(*c)
        .optional())
    .map_err(DbError::classify)
}

fn store_key(conn: &mut DbConn<'_>, key: &ChangeKey, opportunity: Uuid, response: &str) -> Result<(), DbError> {
    let now = Utc::now();
    on_either!(conn, c => diesel::insert_into(k::table)
        .values((
            k::workspace_id.eq(Id(key.workspace_id)),
            k::key.eq(key.key.as_str()),
            k::request_hash.eq(key.request_hash.as_str()),
            k::opportunity_id.eq(Id(opportunity)),
            k::response.eq(response),
            k::created_at.eq(Instant(now)),
        ))
        .execute(*c))
    .map(|_| ())
    .map_err(DbError::classify)
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use chrono::TimeDelta;

    use super::*;
    use crate::db::{Database, DatabaseUrl, PoolOptions};
    use crate::domain::opportunity::{CreateOpportunity, PipelineType};

    fn opportunity(created_at: DateTime<Utc>) -> Opportunity {
        let input = CreateOpportunity {
            customer_id: Some(Uuid::now_v7()),
            title: Some("kept".into()),
            pipeline_type: Some(PipelineType::Retrofit),
            ..Default::default()
        };
        Opportunity::new(input, Uuid::nil(), Uuid::nil(), created_at).unwrap()
    }

    fn key(name: &str) -> Option<IdempotencyRecord> {
        Some(IdempotencyRecord { key: name.into(), request_hash: "h".into(), response: "{}".into() })
    }

    #[tokio::test]
    async fn purging_removes_only_keys_older_than_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let url = DatabaseUrl::Sqlite(dir.path().join("k.db"));
        let db = Database::connect(url, PoolOptions { size: Some(2), timeout: Duration::from_secs(5) }).unwrap();
        let now = Utc::now();
        db.create_opportunity(opportunity(now - TimeDelta::hours(26)), key("old")).await.unwrap();
        db.create_opportunity(opportunity(now - TimeDelta::hours(23)), key("young")).await.unwrap();
        let cutoff = now - crate::IDEMPOTENCY_KEY_TTL;
        let purged = db.run(move |conn| purge_idempotency_keys(conn, cutoff)).await.unwrap();
        assert_eq!(purged, 1);
        // The young key still replays; the old one is free again (a new create under it).
        let replay = db.create_opportunity(opportunity(now), key("young")).await.unwrap();
        assert_eq!(replay, CreateOutcome::Replayed("{}".into()));
        let reused = db.create_opportunity(opportunity(now), key("old")).await.unwrap();
        assert_eq!(reused, CreateOutcome::Created);
        // Purging never removes opportunities.
        assert_eq!(db.run(|conn| count(conn, None)).await.unwrap(), 3);
    }

    /// A PostgreSQL server that takes no writes while its connections stay up (a primary fenced
    /// read-only during a failover): a create is SERVICE_UNAVAILABLE, never a query error, and
    /// the connections that met it are retired, so that once writes are taken again (here the
    /// same server; with `target_session_attrs=read-write`, the new primary) creates succeed.
    #[tokio::test]
    async fn a_server_that_takes_no_writes_is_unavailable_and_its_connections_retired() {
        let test = "a_server_that_takes_no_writes_is_unavailable_and_its_connections_retired";
        let Some((mut conn, guard)) = postgres_database(test) else {
            return;
        };
        let name = guard.url().rsplit_once('/').unwrap().1.to_string();
        let url = DatabaseUrl::Postgres(guard.url());
        let db = Database::connect(url, PoolOptions { size: Some(2), timeout: Duration::from_secs(5) }).unwrap();
        assert_eq!(db.create_opportunity(opportunity(Utc::now()), None).await.unwrap(), CreateOutcome::Created);
        // Fence the database: sessions from now on take no writes, and the service's current
        // ones end (as a failover ends them), so that its next ones are read-only.
        let sql = |conn: &mut PgConnection, sql: String| diesel::sql_query(sql).execute(conn).unwrap();
        sql(&mut conn, format!("ALTER DATABASE {name} SET default_transaction_read_only = on"));
        let others = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        );
        sql(&mut conn, others.clone());
        let mut read_only = 0;
        for _ in 0..6 {
            match db.create_opportunity(opportunity(Utc::now()), None).await {
                Err(DbError::Unavailable(cause)) => read_only += usize::from(cause.contains("read-only")),
                other => panic!("a create on a read-only server: {other:?}"),
            }
        }
        assert!(read_only >= 3, "the refusals of a read-only server are SERVICE_UNAVAILABLE ({read_only} of 6)");
        sql(&mut conn, format!("ALTER DATABASE {name} RESET default_transaction_read_only"));
        // The connections that met the refusal are retired; new ones take writes.
        let mut created = None;
        for _ in 0..6 {
            match db.create_opportunity(opportunity(Utc::now()), None).await {
                Ok(outcome) => {
                    created = Some(outcome);
                    break;
                }
                Err(DbError::Unavailable(_)) => {}
                Err(other) => panic!("a create once writes are taken again: {other:?}"),
            }
        }
        assert_eq!(created, Some(CreateOutcome::Created), "writes are taken again without a restart");
    }

    /// The SQL of each statement a connection puts in its statement cache, and of each it
    /// sends, in order.
    #[derive(Clone, Default)]
    pub(in crate::db) struct CachedStatements {
        cached: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
        sent: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl CachedStatements {
        /// The statements cached since the last call.
        pub(in crate::db) fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.cached.lock().unwrap())
        }

        /// The statements sent since the last call.
        pub(in crate::db) fn take_sent(&self) -> Vec<String> {
            std::mem::take(&mut *self.sent.lock().unwrap())
        }
    }

    impl diesel::connection::Instrumentation for CachedStatements {
        fn on_connection_event(&mut self, event: diesel::connection::InstrumentationEvent<'_>) {
            use diesel::connection::InstrumentationEvent as E;
            match event {
                E::CacheQuery { sql, .. } => self.cached.lock().unwrap().push(sql.to_string()),
                E::StartQuery { query, .. } => self.sent.lock().unwrap().push(query.to_string()),
                _ => {}
            }
        }
    }

    /// A migrated SQLite file (gone with the directory) holding `stored`, on a connection that
    /// records the statements it prepares and sends.
    pub(in crate::db) fn sqlite_with(
        stored: &[&Opportunity],
    ) -> (SqliteConnection, CachedStatements, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        crate::db::migrate(&DatabaseUrl::Sqlite(path.clone())).unwrap();
        let mut conn = crate::db::establish_sqlite(&path).unwrap();
        insert_sqlite_batch(&mut conn, stored).unwrap();
        let cached = CachedStatements::default();
        conn.set_instrumentation(cached.clone());
        (conn, cached, dir)
    }

    #[test]
    fn the_statements_of_a_change_on_sqlite_are_prepared_once_and_kept() {
        let (a, b) = (opportunity(Utc::now()), opportunity(Utc::now()));
        let (mut conn, cached, _dir) = sqlite_with(&[&a, &b]);
        let retitle = |current: Option<Opportunity>| -> Decision<()> {
            let current = current.expect("stored");
            let mut next = current.clone();
            next.title = format!("{} again", current.title);
            next.version += 1;
            next.updated_at = Utc::now();
            let json = serde_json::to_string(&next).unwrap();
            Decision::Write(
                next.clone(),
                Box::new(NewEvent::new(events::EventKind::Updated, Some(&current), &next, Uuid::nil(), json)),
            )
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        assert!(matches!(change_sqlite(&mut conn, a.id, None, deadline, &retitle), Ok(Changed::Done(_))));
        let first = cached.take();
        for statement in
            ["SELECT", "UPDATE opportunity_event_feed", "INSERT INTO `opportunity_events`", "UPDATE opportunities"]
        {
            assert!(first.iter().any(|sql| sql.starts_with(statement)), "{statement}… is kept: {first:#?}");
        }
        // The next change finds every statement prepared.
        assert!(matches!(change_sqlite(&mut conn, b.id, None, deadline, &retitle), Ok(Changed::Done(_))));
        assert_eq!(cached.take(), Vec::<String>::new(), "prepared again");
        assert_eq!(get(DbConn::Sqlite(&mut conn), b.id).unwrap().unwrap().title, "kept again");
    }

    /// A change on SQLite sets an indexed column only where it changed it (SQLite rewrites the
    /// entry of every index whose column an UPDATE sets, changed or not), never the columns no
    /// change sets; each kind of change still stores its row whole, and the indexes stay
    /// consistent with the table.
    #[test]
    fn a_change_on_sqlite_sets_only_the_indexed_columns_it_changed() {
        use crate::domain::opportunity::{Money, VisibilityMode};
        let a = opportunity(Utc::now());
        let (mut conn, cached, _dir) = sqlite_with(&[&a]);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let indexed = ["expected_close_date", "estimated_value_cents", "visibility_mode", "workspace_id", "created_at"];
        let edits: [(Edit, &[&str]); 5] = [
            (|o| o.title = "retitled".into(), &[]),
            (|o| o.expected_close_date = Some("2027-01-05T17:00:00Z".parse().unwrap()), &["expected_close_date"]),
            (|o| o.estimated_value = Some(Money::from_cents(12_500)), &["estimated_value_cents"]),
            (|o| o.visibility_mode = VisibilityMode::Shared, &["visibility_mode"]),
            (
                |o| {
                    o.expected_close_date = None;
                    o.estimated_value = None;
                    o.visibility_mode = VisibilityMode::Global;
                },
                &["expected_close_date", "estimated_value_cents", "visibility_mode"],
            ),
        ];
        for (edit, sets) in edits {
            // The stored state, changed by `edit`: the same every time it is called.
            let decide = |current: Option<Opportunity>| -> Decision<()> {
                let current = current.expect("stored");
                let mut next = current.clone();
                edit(&mut next);
                next.version += 1;
                let json = serde_json::to_string(&next).unwrap();
                Decision::Write(
                    next.clone(),
                    Box::new(NewEvent::new(events::EventKind::Updated, Some(&current), &next, Uuid::nil(), json)),
                )
            };
            let before = get(DbConn::Sqlite(&mut conn), a.id).unwrap().unwrap();
            assert!(matches!(change_sqlite(&mut conn, a.id, None, deadline, &decide), Ok(Changed::Done(_))));
            let update = cached.take().into_iter().find(|sql| sql.starts_with("UPDATE opportunities SET"));
            let update = update.expect("each shape is prepared the first time");
            for column in indexed {
                let set = update.contains(&format!(" {column} = "));
                assert_eq!(set, sets.contains(&column), "{column} in {update}");
            }
            let Decision::Write(expected, _) = decide(Some(before)) else { unreachable!("a write") };
            assert_eq!(get(DbConn::Sqlite(&mut conn), a.id).unwrap().unwrap(), expected, "stored whole");
        }
        #[derive(diesel::QueryableByName)]
        struct Check {
            #[diesel(sql_type = diesel::sql_types::Text)]
            integrity_check: String,
        }
        let check: Vec<Check> = diesel::sql_query("PRAGMA integrity_check").load(&mut conn).unwrap();
        assert_eq!(check.iter().map(|c| c.integrity_check.as_str()).collect::<Vec<_>>(), ["ok"]);
    }

    /// A fresh, migrated PostgreSQL database when `TEST_DATABASE_URL` names a server (dropped
    /// when the guard goes); `None`, said on stderr, otherwise.
    pub(in crate::db) fn postgres_database(test: &str) -> Option<(PgConnection, PgDropGuard)> {
        let Some(admin) = std::env::var("TEST_DATABASE_URL").ok().filter(|u| u.starts_with("postgres")) else {
            eprintln!("{test}: SKIPPED, needs PostgreSQL (set TEST_DATABASE_URL=postgres://…)");
            return None;
        };
        let name = format!("ops_unit_{}", Uuid::new_v4().simple());
        let mut server = PgConnection::establish(&admin).expect("TEST_DATABASE_URL answers");
        diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut server).unwrap();
        let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
        crate::db::migrate(&DatabaseUrl::Postgres(url.clone())).unwrap();
        Some((PgConnection::establish(&url).unwrap(), PgDropGuard { admin, name }))
    }

    pub(in crate::db) struct PgDropGuard {
        admin: String,
        name: String,
    }

    impl PgDropGuard {
        /// The database's URL, for another connection to it.
        pub(in crate::db) fn url(&self) -> String {
            format!("{}/{}", self.admin.rsplit_once('/').unwrap().0, self.name)
        }
    }

    impl Drop for PgDropGuard {
        fn drop(&mut self) {
            if let Ok(mut server) = PgConnection::establish(&self.admin) {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
                    .execute(&mut server);
            }
        }
    }

    #[test]
    fn the_feed_statements_on_postgres_are_prepared_once_whatever_the_group_size() {
        let test = "the_feed_statements_on_postgres_are_prepared_once_whatever_the_group_size";
        let Some((mut conn, _guard)) = postgres_database(test) else {
            return;
        };
        let cached = CachedStatements::default();
        conn.set_instrumentation(cached.clone());
        let feed = |sql: &String| sql.contains("opportunity_event_feed") || sql.contains("opportunity_events");
        let in_time = std::time::Instant::now() + Duration::from_secs(60);
        for (size, expected) in [(3, 1), (5, 0), (1, 0)] {
            let opportunities: Vec<Opportunity> = (0..size).map(|_| opportunity(Utc::now())).collect();
            let events: Vec<NewEvent> =
                opportunities.iter().map(|o| NewEvent::created(o, serde_json::to_string(o).unwrap())).collect();
            let group: Vec<_> = opportunities.iter().zip(&events).map(|(o, e)| (o, None, e)).collect();
            let mut outcomes = Vec::new();
            create_postgres_group(&mut conn, &group, in_time, &mut outcomes).unwrap();
            assert_eq!(outcomes, vec![CreateOutcome::Created; size]);
            let prepared: Vec<String> = cached.take().into_iter().filter(feed).collect();
            assert_eq!(prepared.len(), expected, "a group of {size} prepared {prepared:#?}");
        }
        let stored: i64 = crate::db::schema::opportunity_events::table.count().get_result(&mut conn).unwrap();
        assert_eq!(stored, 9, "one event per create");
    }

    #[test]
    fn a_postgres_group_past_its_deadline_is_rolled_back_whole() {
        let Some((mut conn, _guard)) = postgres_database("a_postgres_group_past_its_deadline_is_rolled_back_whole")
        else {
            return;
        };
        let now = Utc::now();
        let (a, b, c) = (opportunity(now), opportunity(now), opportunity(now));
        let k = key("late");
        let event = |o: &Opportunity| NewEvent::created(o, serde_json::to_string(o).unwrap());
        let (ea, eb, ec) = (event(&a), event(&b), event(&c));
        let group = [(&a, None, &ea), (&b, k.as_ref(), &eb), (&c, None, &ec)];
        let mut outcomes = Vec::new();
        let late = create_postgres_group(&mut conn, &group, std::time::Instant::now(), &mut outcomes);
        assert!(matches!(late, Err(DieselError::RollbackTransaction)), "{late:?}");
        assert_eq!(outcomes.len(), 3, "every statement ran before the deadline check");
        assert_eq!(count(DbConn::Postgres(&mut conn), None).unwrap(), 0, "nothing of a late group is stored");
        let keys: i64 = k::table.count().get_result(&mut conn).unwrap();
        assert_eq!(keys, 0, "nor its keys");

        let in_time = std::time::Instant::now() + Duration::from_secs(60);
        create_postgres_group(&mut conn, &group, in_time, &mut outcomes).unwrap();
        assert_eq!(outcomes, vec![CreateOutcome::Created; 3]);
        assert_eq!(count(DbConn::Postgres(&mut conn), None).unwrap(), 3);
        let keys: i64 = k::table.count().get_result(&mut conn).unwrap();
        assert_eq!(keys, 1);
    }

    type Edit = fn(&mut Opportunity);

    /// Stores `n` new opportunities on PostgreSQL, in groups of creates as the writer does.
    fn create_many(conn: &mut PgConnection, n: usize) -> Vec<Opportunity> {
        let stored: Vec<Opportunity> = (0..n).map(|_| opportunity(Utc::now())).collect();
        let events: Vec<NewEvent> =
            stored.iter().map(|o| NewEvent::created(o, serde_json::to_string(o).unwrap())).collect();
        let group: Vec<_> = stored.iter().zip(&events).map(|(o, e)| (o, None, e)).collect();
        let in_time = std::time::Instant::now() + Duration::from_secs(60);
        for chunk in group.chunks(crate::db::pg_writer::MAX_GROUP) {
            create_postgres_group(conn, chunk, in_time, &mut Vec::new()).unwrap();
        }
        stored
    }

    /// Runs `edits` as one group of changes on PostgreSQL, as the writer does, calls `before_commit`
    /// in the group's transaction after its last statement, and answers the group's first
    /// position.
    fn change_group(
        conn: &mut PgConnection,
        edits: &[(Uuid, Edit)],
        before_commit: impl FnOnce(&mut PgConnection),
    ) -> i64 {
        let before = events::head(DbConn::Postgres(conn)).unwrap();
        conn.transaction(|c| {
            let mut ids: Vec<Uuid> = edits.iter().map(|(id, _)| *id).collect();
            ids.sort();
            let mut locked = lock_postgres(c, &ids).map_err(into_diesel)?;
            let mut deferred = Vec::new();
            for &(id, edit) in edits {
                let decide = move |current: Option<Opportunity>| -> Decision<()> {
                    let current = current.expect("stored");
                    let mut next = current.clone();
                    edit(&mut next);
                    next.version += 1;
                    let json = serde_json::to_string(&next).unwrap();
                    let event = NewEvent::new(events::EventKind::Updated, Some(&current), &next, Uuid::nil(), json);
                    Decision::Write(next, Box::new(event))
                };
                change_postgres(c, &mut locked, id, None, &decide, &mut deferred).map_err(into_diesel)?;
            }
            finish_changes(DbConn::Postgres(c), &deferred)?;
            before_commit(c);
            Ok::<_, DieselError>(())
        })
        .unwrap();
        before + 1
    }

    /// A group of changes on PostgreSQL on full pages of rows: each changed row's two versions
    /// (its new state, then its feed positions) stay in the row's page, and the second one is
    /// a heap-only tuple that touches no index (the table's fillfactor, migration
    /// 2026-12-06-000001). On pages filled to the brim the new states moved to other pages, and
    /// half of the positions' versions went through every index again.
    #[test]
    fn the_rows_of_a_group_of_changes_on_postgres_stay_in_their_pages_and_are_positioned_heap_only() {
        let test = "the_rows_of_a_group_of_changes_on_postgres_stay_in_their_pages_and_are_positioned_heap_only";
        let Some((mut conn, _guard)) = postgres_database(test) else {
            return;
        };
        // Pages filled as creates fill them: 400 rows take more than a dozen.
        create_many(&mut conn, 400);
        #[derive(diesel::QueryableByName)]
        struct Placed {
            #[diesel(sql_type = diesel::sql_types::Text)]
            id: String,
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            page: i64,
        }
        // The page a row version is in: the first half of its `ctid`.
        const PAGE: &str = "((ctid::text::point)[0])::bigint";
        let page = |conn: &mut PgConnection, id: Uuid| {
            diesel::sql_query(format!("SELECT id::text AS id, {PAGE} AS page FROM opportunities WHERE id = '{id}'"))
                .get_result::<Placed>(conn)
                .unwrap()
                .page
        };
        // One row of each page, in page order: all but the last page written are full.
        let first_of_each = format!(
            "SELECT DISTINCT ON (page) id, page FROM (SELECT id::text AS id, {PAGE} AS page FROM opportunities) AS p \
             ORDER BY page, id"
        );
        let mut chosen: Vec<(i64, Uuid)> = diesel::sql_query(first_of_each)
            .load::<Placed>(&mut conn)
            .unwrap()
            .into_iter()
            .map(|p| (p.page, p.id.parse().unwrap()))
            .collect();
        assert!(chosen.len() > 10, "400 rows fill more than ten pages: {}", chosen.len());
        chosen.truncate(10);
        // As an update does: a new title, and `updated_at`, which is indexed, moves.
        let retitle: Edit = |o| {
            o.title = format!("{} again", o.title);
            o.updated_at = Utc::now();
        };
        let edits: Vec<(Uuid, Edit)> = chosen.iter().map(|&(_, id)| (id, retitle)).collect();

        #[derive(diesel::QueryableByName, Debug, PartialEq)]
        struct Updates {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n_tup_upd: i64,
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n_tup_hot_upd: i64,
        }
        let mut updates = None;
        change_group(&mut conn, &edits, |c| {
            let sql = "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = 'opportunities'";
            updates = Some(diesel::sql_query(sql).get_result::<Updates>(c).unwrap());
        });
        // Two versions a row: the new state (every index), then its positions (heap-only).
        assert_eq!(updates, Some(Updates { n_tup_upd: 20, n_tup_hot_upd: 10 }));
        for (p, id) in chosen {
            assert_eq!(page(&mut conn, id), p, "the changed row {id} stayed in its page");
            assert_eq!(get(DbConn::Postgres(&mut conn), id).unwrap().unwrap().title, "kept again");
        }
    }

    /// Every column a change can set, to a value and back to none, as a group of changes writes
    /// it (the rows bound as one JSON array, read into the table's row type).
    #[test]
    fn a_group_of_changes_on_postgres_keeps_every_value_as_given() {
        let Some((mut conn, _guard)) = postgres_database("a_group_of_changes_on_postgres_keeps_every_value_as_given")
        else {
            return;
        };
        use crate::domain::opportunity::{LostReasonCategory, Money, Priority, Source, Stage, VisibilityMode};
        let fill: Edit = |o| {
            o.customer_id = Uuid::from_u128(1);
            o.primary_contact_id = Some(Uuid::from_u128(2));
            o.site_id = Some(Uuid::from_u128(3));
            o.title = "Chiller \"plant\" \\ retrofit, {phase 2} ✓".into();
            (o.stage, o.is_closed, o.is_won) = (Stage::Lost, true, false);
            o.source = Some(Source::Referral);
            o.estimated_value = Some(Money::from_cents(123_456_789));
            o.expected_close_date = Some(DateTime::from_timestamp_micros(1_800_000_000_123_456).unwrap());
            o.probability = Some(0);
            o.solution_families = ["say \"hi\"", "back\\slash", "a,b", "{braced}", "NULL", " spaced ", "Ünïcode ✓", ""]
                .map(String::from)
                .to_vec();
            o.scope_summary = Some("line one\nline two\ttab".into());
            o.competitor_notes = Some("'quoted' -- not a comment".into());
            o.win_loss_reason = Some("price".into());
            o.next_step_description = Some("call".into());
            o.next_step_date = Some(DateTime::from_timestamp_micros(1_790_000_000_000_001).unwrap());
            o.bid_due_date = Some(DateTime::from_timestamp_micros(1_795_000_000_999_999).unwrap());
            o.budget_confirmed = true;
            o.priority = Some(Priority::Urgent);
            o.lost_reason_category = Some(LostReasonCategory::Competitor);
            o.technical_requirements = Some("BACnet/IP".into());
            o.owner_user_id = Uuid::from_u128(4);
            o.visibility_mode = VisibilityMode::Shared;
            o.archived_at = Some(DateTime::from_timestamp_micros(1_801_000_000_000_000).unwrap());
        };
        let clear: Edit = |o| {
            o.primary_contact_id = None;
            o.site_id = None;
            (o.stage, o.is_closed) = (Stage::Lead, false);
            o.source = None;
            o.estimated_value = None;
            o.expected_close_date = None;
            o.probability = None;
            o.solution_families = Vec::new();
            o.scope_summary = None;
            o.competitor_notes = None;
            o.win_loss_reason = None;
            o.next_step_description = None;
            o.next_step_date = None;
            o.bid_due_date = None;
            o.budget_confirmed = false;
            o.priority = None;
            o.lost_reason_category = None;
            o.technical_requirements = None;
            o.archived_at = None;
        };
        let stored = create_many(&mut conn, 2);
        let (a, b) = (stored[0].id, stored[1].id);
        let read = |conn: &mut PgConnection, id| get(DbConn::Postgres(conn), id).unwrap().unwrap();
        // a is filled; b is filled and cleared in the same group (its last state is written).
        let (mut want_a, mut want_b) = (read(&mut conn, a), read(&mut conn, b));
        change_group(&mut conn, &[(a, fill), (b, fill), (b, clear)], |_| ());
        fill(&mut want_a);
        want_a.version += 1;
        fill(&mut want_b);
        clear(&mut want_b);
        want_b.version += 2;
        assert_eq!(read(&mut conn, a), want_a);
        assert_eq!(read(&mut conn, b), want_b);
    }

    /// A group of changes on PostgreSQL writes each row's last state and the feed positions of
    /// its changes (`updated_pos` always; `close_pos` and `value_pos` only where a change moved
    /// that value), with statements prepared once: a later group of another size prepares none.
    #[test]
    fn a_group_of_changes_on_postgres_writes_last_states_and_positions_with_statements_kept() {
        let test = "a_group_of_changes_on_postgres_writes_last_states_and_positions_with_statements_kept";
        let Some((mut conn, _guard)) = postgres_database(test) else {
            return;
        };
        let stored = create_many(&mut conn, 4);

        #[derive(diesel::QueryableByName, Debug, PartialEq)]
        struct Positions {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            updated_pos: i64,
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            close_pos: i64,
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            value_pos: i64,
        }
        let positions = |conn: &mut PgConnection, id: Uuid| {
            diesel::sql_query(format!("SELECT updated_pos, close_pos, value_pos FROM opportunities WHERE id = '{id}'"))
                .get_result::<Positions>(conn)
                .unwrap()
        };
        let retitle: Edit = |o| o.title = format!("{} again", o.title);
        let move_close: Edit = |o| o.expected_close_date = Some(Utc::now() + chrono::Duration::days(30));
        let move_value: Edit = |o| o.estimated_value = Some(crate::domain::opportunity::Money::from_cents(12_500));
        let run = |conn: &mut PgConnection, edits: &[(Uuid, Edit)]| change_group(conn, edits, |_| ());
        let (a, b, c, d) = (stored[0].id, stored[1].id, stored[2].id, stored[3].id);
        let untouched = positions(&mut conn, c);
        let (a_before, b_before) = (positions(&mut conn, a), positions(&mut conn, b));

        let cached = CachedStatements::default();
        conn.set_instrumentation(cached.clone());
        let first = run(&mut conn, &[(a, retitle), (b, move_close), (a, move_value)]);
        let prepared = cached.take();
        assert!(
            prepared.iter().any(|sql| sql.starts_with("UPDATE opportunities AS o SET customer_id")),
            "the rows' statement is kept: {prepared:#?}"
        );
        assert!(
            prepared.iter().any(|sql| sql.starts_with("WITH feed AS") && sql.contains("positioned AS")),
            "the statement of the events and positions is kept: {prepared:#?}"
        );
        // a changed at `first` and `first + 2` (its value), b at `first + 1` (its close date).
        let expected_a = Positions { updated_pos: first + 2, close_pos: a_before.close_pos, value_pos: first + 2 };
        assert_eq!(positions(&mut conn, a), expected_a);
        let expected_b = Positions { updated_pos: first + 1, close_pos: first + 1, value_pos: b_before.value_pos };
        assert_eq!(positions(&mut conn, b), expected_b);
        assert_eq!(positions(&mut conn, c), untouched, "a row outside the group keeps its positions");
        let a_now = get(DbConn::Postgres(&mut conn), a).unwrap().unwrap();
        assert_eq!((a_now.title.as_str(), a_now.estimated_value.map(|m| m.cents())), ("kept again", Some(12_500)));
        assert_eq!(a_now.version, 3, "both changes of the group");
        assert_eq!(events::head(DbConn::Postgres(&mut conn)).unwrap(), first + 2);

        cached.take();
        let first = run(&mut conn, &[(d, retitle), (c, move_close)]);
        assert_eq!(cached.take(), Vec::<String>::new(), "a group of another size prepared statements again");
        assert_eq!(positions(&mut conn, d).updated_pos, first);
        assert_eq!(positions(&mut conn, c).close_pos, first + 1);
    }
}

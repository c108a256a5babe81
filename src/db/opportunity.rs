//! Queries of opportunities and of the idempotency keys of their creates.

use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use uuid::Uuid;

use super::schema::{postgres as pg, sqlite as lite};
use super::{DbConn, DbError};
use crate::domain::opportunity::Opportunity;

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

/// Inserts the rows of a `Vec` with as few multi-row INSERTs of 64, 32, 16, 8, 4, 2 and 1 rows
/// as it takes. diesel prepares an INSERT of a fixed number of rows once per connection and
/// keeps it; one of any length would be parsed (and on PostgreSQL planned) again every time,
/// which cost more than the rows themselves.
macro_rules! insert_in_chunks {
    ($conn:expr, $table:expr, $rows:expr) => {{
        let rows = $rows;
        let mut left = rows.len();
        let mut rows = rows.into_iter();
        let mut result: QueryResult<()> = Ok(());
        insert_in_chunks!(@sizes result, $conn, $table, rows, left, 64, 32, 16, 8, 4, 2, 1);
        result
    }};
    (@sizes $result:ident, $conn:expr, $table:expr, $rows:ident, $left:ident, $($n:literal),+) => {
        $(
            while $result.is_ok() && $left >= $n {
                let chunk: [_; $n] = std::array::from_fn(|_| $rows.next().expect("counted rows"));
                $result = diesel::insert_into($table).values(chunk).execute($conn).map(|_| ());
                $left -= $n;
            }
        )+
    };
}

fn sqlite_instant(instant: &DateTime<Utc>) -> String {
    // Fixed width (`%Y-%m-%dT%H:%M:%S%.6fZ`), so that text order is time order.
    instant.to_rfc3339_opts(SecondsFormat::Micros, true)
}

// Every column bound, `None` as NULL, so that the SQL of an INSERT of N rows is always the same
// and diesel keeps it prepared (see `insert_in_chunks!`).
#[derive(Insertable)]
#[diesel(table_name = pg::opportunities, treat_none_as_default_value = false)]
struct PgRow {
    id: Uuid,
    workspace_id: Uuid,
    customer_id: Uuid,
    primary_contact_id: Option<Uuid>,
    site_id: Option<Uuid>,
    title: String,
    stage: &'static str,
    pipeline_type: &'static str,
    source: Option<&'static str>,
    estimated_value: Option<bigdecimal::BigDecimal>,
    expected_close_date: Option<DateTime<Utc>>,
    probability: Option<i16>,
    solution_families: Vec<String>,
    scope_summary: Option<String>,
    competitor_notes: Option<String>,
    win_loss_reason: Option<String>,
    next_step_description: Option<String>,
    next_step_date: Option<DateTime<Utc>>,
    bid_due_date: Option<DateTime<Utc>>,
    budget_confirmed: bool,
    priority: Option<&'static str>,
    lost_reason_category: Option<&'static str>,
    technical_requirements: Option<String>,
    owner_user_id: Uuid,
    visibility_mode: &'static str,
    created_by: Uuid,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i32,
}

impl PgRow {
    /// Owned, so that diesel can keep the prepared INSERT of a fixed number of rows.
    fn new(o: &Opportunity) -> Self {
        Self {
            id: o.id,
            workspace_id: o.workspace_id,
            customer_id: o.customer_id,
            primary_contact_id: o.primary_contact_id,
            site_id: o.site_id,
            title: o.title.clone(),
            stage: o.stage.as_str(),
            pipeline_type: o.pipeline_type.as_str(),
            source: o.source.map(|s| s.as_str()),
            estimated_value: o.estimated_value.map(|m| m.to_decimal()),
            expected_close_date: o.expected_close_date,
            probability: o.probability,
            solution_families: o.solution_families.clone(),
            scope_summary: o.scope_summary.clone(),
            competitor_notes: o.competitor_notes.clone(),
            win_loss_reason: o.win_loss_reason.clone(),
            next_step_description: o.next_step_description.clone(),
            next_step_date: o.next_step_date,
            bid_due_date: o.bid_due_date,
            budget_confirmed: o.budget_confirmed,
            priority: o.priority.map(|p| p.as_str()),
            lost_reason_category: o.lost_reason_category.map(|l| l.as_str()),
            technical_requirements: o.technical_requirements.clone(),
            owner_user_id: o.owner_user_id,
            visibility_mode: o.visibility_mode.as_str(),
            created_by: o.created_by,
            created_at: o.created_at,
            updated_at: o.updated_at,
            version: o.version,
        }
    }
}

// Every column bound, `None` as NULL: SQLite has no DEFAULT keyword, and only so does diesel
// make one multi-row INSERT of a batch (`insert_sqlite_batch`) instead of one INSERT per row.
#[derive(Insertable)]
#[diesel(table_name = lite::opportunities, treat_none_as_default_value = false)]
struct SqliteRow {
    id: String,
    workspace_id: String,
    customer_id: String,
    primary_contact_id: Option<String>,
    site_id: Option<String>,
    title: String,
    stage: &'static str,
    pipeline_type: &'static str,
    source: Option<&'static str>,
    estimated_value_cents: Option<i64>,
    expected_close_date: Option<String>,
    probability: Option<i32>,
    solution_families: String,
    scope_summary: Option<String>,
    competitor_notes: Option<String>,
    win_loss_reason: Option<String>,
    next_step_description: Option<String>,
    next_step_date: Option<String>,
    bid_due_date: Option<String>,
    budget_confirmed: bool,
    priority: Option<&'static str>,
    lost_reason_category: Option<&'static str>,
    technical_requirements: Option<String>,
    owner_user_id: String,
    visibility_mode: &'static str,
    created_by: String,
    created_at: String,
    updated_at: String,
    version: i32,
}

impl SqliteRow {
    /// Owned, so that diesel can keep the prepared INSERT of a fixed number of rows.
    fn new(o: &Opportunity) -> Self {
        let id = |u: Uuid| u.to_string();
        Self {
            id: id(o.id),
            workspace_id: id(o.workspace_id),
            customer_id: id(o.customer_id),
            primary_contact_id: o.primary_contact_id.map(id),
            site_id: o.site_id.map(id),
            title: o.title.clone(),
            stage: o.stage.as_str(),
            pipeline_type: o.pipeline_type.as_str(),
            source: o.source.map(|s| s.as_str()),
            estimated_value_cents: o.estimated_value.map(|m| m.cents()),
            expected_close_date: o.expected_close_date.as_ref().map(sqlite_instant),
            probability: o.probability.map(i32::from),
            solution_families: serde_json::to_string(&o.solution_families).expect("a list of strings serializes"),
            scope_summary: o.scope_summary.clone(),
            competitor_notes: o.competitor_notes.clone(),
            win_loss_reason: o.win_loss_reason.clone(),
            next_step_description: o.next_step_description.clone(),
            next_step_date: o.next_step_date.as_ref().map(sqlite_instant),
            bid_due_date: o.bid_due_date.as_ref().map(sqlite_instant),
            budget_confirmed: o.budget_confirmed,
            priority: o.priority.map(|p| p.as_str()),
            lost_reason_category: o.lost_reason_category.map(|l| l.as_str()),
            technical_requirements: o.technical_requirements.clone(),
            owner_user_id: id(o.owner_user_id),
            visibility_mode: o.visibility_mode.as_str(),
            created_by: id(o.created_by),
            created_at: sqlite_instant(&o.created_at),
            updated_at: sqlite_instant(&o.updated_at),
            version: o.version,
        }
    }
}

/// Whether an error is the unique violation of a concurrent call that took the same key first.
fn is_unique_violation(e: &DieselError) -> bool {
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
    deadline: Instant,
) -> QueryResult<CreateOutcome> {
    let Some(record) = key else {
        // One statement commits alone: one round trip, no BEGIN and COMMIT around it. A caller
        // that stops waiting looks the id up before answering (Database::create_opportunity).
        diesel::insert_into(pg::opportunities::table).values(PgRow::new(o)).execute(conn)?;
        return Ok(CreateOutcome::Created);
    };
    conn.transaction(|conn| {
        let outcome = insert_keyed_postgres(conn, o, record)?;
        // The caller stops waiting at the deadline and answers SERVICE_UNAVAILABLE: past it,
        // roll back rather than store a create that was answered as not done.
        if Instant::now() >= deadline {
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
    group: &[(&Opportunity, Option<&IdempotencyRecord>)],
    deadline: Instant,
    outcomes: &mut Vec<CreateOutcome>,
) -> QueryResult<()> {
    outcomes.clear();
    let keyless: Vec<PgRow> = group.iter().filter(|(_, key)| key.is_none()).map(|(o, _)| PgRow::new(o)).collect();
    conn.transaction(|conn| {
        if !keyless.is_empty() {
            insert_in_chunks!(conn, pg::opportunities::table, keyless)?;
        }
        for (o, key) in group {
            outcomes.push(match key {
                None => CreateOutcome::Created,
                Some(record) => insert_keyed_postgres(conn, o, record)?,
            });
        }
        if Instant::now() >= deadline {
            return Err(DieselError::RollbackTransaction);
        }
        Ok(())
    })
}

/// The keyed part of a create on PostgreSQL, inside the caller's transaction: replay or report a
/// reuse of the key, or insert the opportunity and its key.
fn insert_keyed_postgres(
    conn: &mut PgConnection,
    o: &Opportunity,
    record: &IdempotencyRecord,
) -> QueryResult<CreateOutcome> {
    let stored = pg::idempotency_keys::table
        .find((o.workspace_id, record.key.as_str()))
        .select((pg::idempotency_keys::request_hash, pg::idempotency_keys::response))
        .first::<(String, String)>(conn)
        .optional()?;
    if let Some(outcome) = replay_or_reuse(stored, record) {
        return Ok(outcome);
    }
    diesel::insert_into(pg::opportunities::table).values(PgRow::new(o)).execute(conn)?;
    diesel::insert_into(pg::idempotency_keys::table)
        .values((
            pg::idempotency_keys::workspace_id.eq(o.workspace_id),
            pg::idempotency_keys::key.eq(record.key.as_str()),
            pg::idempotency_keys::request_hash.eq(record.request_hash.as_str()),
            pg::idempotency_keys::opportunity_id.eq(o.id),
            pg::idempotency_keys::response.eq(record.response.as_str()),
            pg::idempotency_keys::created_at.eq(o.created_at),
        ))
        .execute(conn)?;
    Ok(CreateOutcome::Created)
}

/// Inserts opportunities without keys as one multi-row INSERT, in a savepoint of the caller's
/// transaction: all are stored or, on an error, none.
pub(super) fn insert_sqlite_batch(conn: &mut SqliteConnection, batch: &[&Opportunity]) -> QueryResult<()> {
    let rows: Vec<SqliteRow> = batch.iter().map(|o| SqliteRow::new(o)).collect();
    conn.transaction(|conn| insert_in_chunks!(conn, lite::opportunities::table, rows))
}

/// Inserts one opportunity (and its key) in a savepoint of the caller's transaction.
pub(super) fn create_sqlite(
    conn: &mut SqliteConnection,
    o: &Opportunity,
    key: Option<&IdempotencyRecord>,
) -> QueryResult<CreateOutcome> {
    // Runs inside the group transaction of the SQLite writer (src/db/writer.rs), as a savepoint:
    // a create that fails is rolled back alone.
    conn.transaction(|conn| {
        let workspace = o.workspace_id.to_string();
        if let Some(record) = key {
            let stored = lite::idempotency_keys::table
                .find((&workspace, record.key.as_str()))
                .select((lite::idempotency_keys::request_hash, lite::idempotency_keys::response))
                .first::<(String, String)>(conn)
                .optional()?;
            if let Some(outcome) = replay_or_reuse(stored, record) {
                return Ok(outcome);
            }
        }
        diesel::insert_into(lite::opportunities::table).values(SqliteRow::new(o)).execute(conn)?;
        if let Some(record) = key {
            diesel::insert_into(lite::idempotency_keys::table)
                .values((
                    lite::idempotency_keys::workspace_id.eq(&workspace),
                    lite::idempotency_keys::key.eq(record.key.as_str()),
                    lite::idempotency_keys::request_hash.eq(record.request_hash.as_str()),
                    lite::idempotency_keys::opportunity_id.eq(o.id.to_string()),
                    lite::idempotency_keys::response.eq(record.response.as_str()),
                    lite::idempotency_keys::created_at.eq(sqlite_instant(&o.created_at)),
                ))
                .execute(conn)?;
        }
        Ok(CreateOutcome::Created)
    })
}

/// Inserts an opportunity in one transaction, with its idempotency key when there is one: the
/// key's earlier answer is replayed, or a reuse with other params reported, and nothing written.
/// When a concurrent call commits the same key first, this call's transaction is rolled back
/// whole and the key looked up again, so one key never makes two rows.
pub fn create(
    conn: DbConn<'_>,
    o: &Opportunity,
    key: Option<&IdempotencyRecord>,
    deadline: Instant,
) -> Result<CreateOutcome, DbError> {
    let run = |conn: &mut DbConn<'_>| match conn {
        DbConn::Postgres(c) => create_postgres(c, o, key, deadline),
        // IMMEDIATE takes the write lock up front: the key lookup and the inserts see one state.
        DbConn::Sqlite(c) => c.immediate_transaction(|c| create_sqlite(c, o, key)),
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
    diesel::select(diesel::dsl::exists(pg::opportunities::table.find(id))).get_result(conn).map_err(DbError::classify)
}

/// Deletes idempotency keys created before `cutoff`; returns how many.
pub fn purge_idempotency_keys(conn: DbConn<'_>, cutoff: DateTime<Utc>) -> Result<usize, DbError> {
    match conn {
        DbConn::Postgres(c) => {
            diesel::delete(pg::idempotency_keys::table.filter(pg::idempotency_keys::created_at.lt(cutoff))).execute(c)
        }
        DbConn::Sqlite(c) => diesel::delete(
            lite::idempotency_keys::table.filter(lite::idempotency_keys::created_at.lt(sqlite_instant(&cutoff))),
        )
        .execute(c),
    }
    .map_err(DbError::classify)
}

/// How many opportunities a workspace holds (all workspaces when `None`).
pub fn count(conn: DbConn<'_>, workspace: Option<Uuid>) -> Result<i64, DbError> {
    match conn {
        DbConn::Postgres(c) => match workspace {
            Some(ws) => pg::opportunities::table.filter(pg::opportunities::workspace_id.eq(ws)).count().get_result(c),
            None => pg::opportunities::table.count().get_result(c),
        },
        DbConn::Sqlite(c) => match workspace {
            Some(ws) => lite::opportunities::table
                .filter(lite::opportunities::workspace_id.eq(ws.to_string()))
                .count()
                .get_result(c),
            None => lite::opportunities::table.count().get_result(c),
        },
    }
    .map_err(DbError::classify)
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn sqlite_instants_have_a_fixed_width() {
        let at = |text: &str| DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc);
        assert_eq!(sqlite_instant(&at("2026-12-01T09:30:00+02:00")), "2026-12-01T07:30:00.000000Z");
        assert_eq!(sqlite_instant(&at("1970-01-01T00:00:00.5Z")), "1970-01-01T00:00:00.500000Z");
        assert_eq!(sqlite_instant(&at("2199-12-31T23:59:59.123456Z")), "2199-12-31T23:59:59.123456Z");
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

    /// A fresh, migrated PostgreSQL database when `TEST_DATABASE_URL` names a server (dropped
    /// when the guard goes); `None`, said on stderr, otherwise.
    fn postgres_database(test: &str) -> Option<(PgConnection, PgDropGuard)> {
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

    struct PgDropGuard {
        admin: String,
        name: String,
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
    fn a_postgres_group_past_its_deadline_is_rolled_back_whole() {
        let Some((mut conn, _guard)) = postgres_database("a_postgres_group_past_its_deadline_is_rolled_back_whole")
        else {
            return;
        };
        let now = Utc::now();
        let (a, b, c) = (opportunity(now), opportunity(now), opportunity(now));
        let k = key("late");
        let group = [(&a, None), (&b, k.as_ref()), (&c, None)];
        let mut outcomes = Vec::new();
        let late = create_postgres_group(&mut conn, &group, Instant::now(), &mut outcomes);
        assert!(matches!(late, Err(DieselError::RollbackTransaction)), "{late:?}");
        assert_eq!(outcomes.len(), 3, "every statement ran before the deadline check");
        assert_eq!(count(DbConn::Postgres(&mut conn), None).unwrap(), 0, "nothing of a late group is stored");
        let keys: i64 = pg::idempotency_keys::table.count().get_result(&mut conn).unwrap();
        assert_eq!(keys, 0, "nor its keys");

        let in_time = Instant::now() + Duration::from_secs(60);
        create_postgres_group(&mut conn, &group, in_time, &mut outcomes).unwrap();
        assert_eq!(outcomes, vec![CreateOutcome::Created; 3]);
        assert_eq!(count(DbConn::Postgres(&mut conn), None).unwrap(), 3);
        let keys: i64 = pg::idempotency_keys::table.count().get_result(&mut conn).unwrap();
        assert_eq!(keys, 1);
    }
}

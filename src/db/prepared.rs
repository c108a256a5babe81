//! Statements that diesel keeps prepared on each connection, where its query builder would
//! prepare them anew on every call: an INSERT of a fixed number of rows, the feed positions and
//! events of a group on PostgreSQL as one statement of arrays, and the UPDATEs of every write
//! (diesel never keeps an UPDATE: `UpdateStatement` is marked unsafe to cache, and `sql_query`
//! is never kept). A type here has a static query id and says nothing that makes it unsafe to
//! cache, so diesel's statement cache keeps it per connection; on PostgreSQL that saves a parse
//! and a plan per statement, on SQLite the compilation of the statement.

use diesel::backend::Backend;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{Array, BigInt, Bool, HasSqlType, Integer, Nullable, Text};
use diesel::sqlite::Sqlite;
use diesel::{PgConnection, QueryResult, RunQueryDsl, SqliteConnection};

use super::events::NewEvent;
use super::opportunity::Row;
use super::types::{Id, Instant, sql};

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

/// Takes `n` positions of the change feed under its position lock, and answers the last one:
/// `UPDATE opportunity_event_feed SET last_position = last_position + n WHERE id = 1 RETURNING
/// last_position`. SQLite's; on PostgreSQL the statement that inserts the events takes them
/// ([`PgAppendEvents`]).
#[derive(Debug, QueryId)]
pub struct TakePositions(pub i64);

impl<DB> QueryFragment<DB> for TakePositions
where
    DB: Backend + HasSqlType<BigInt>,
    i64: ToSql<BigInt, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        out.push_sql("UPDATE opportunity_event_feed SET last_position = last_position + ");
        out.push_bind_param::<BigInt, _>(&self.0)?;
        out.push_sql(" WHERE id = 1 RETURNING last_position");
        Ok(())
    }
}

impl Query for TakePositions {
    type SqlType = BigInt;
}

impl<C> RunQueryDsl<C> for TakePositions {}

/// Writes a changed opportunity on SQLite with the feed positions of its change: every column a
/// change may set, `updated_pos`, and `close_pos` and `value_pos` where the change moved them
/// (a NULL leaves the stored position).
///
/// An indexed column is set only where the group changed it (`CLOSE`: `expected_close_date`,
/// `VALUE`: `estimated_value_cents`, `VISIBILITY`: `visibility_mode`, which decides the rows of
/// a partial index), and the columns no change sets (`workspace_id`, `created_by`,
/// `created_at`) never are: SQLite deletes and inserts again the entry of every index whose
/// column an UPDATE sets, whatever the value, which dirtied a page of each such index (and
/// wrote it to the log) for every scattered update. Each of the eight shapes is a type of its
/// own, so that diesel keeps each prepared: [`sqlite_write_changed`] picks it.
pub struct SqliteWriteChanged<const CLOSE: bool, const VALUE: bool, const VISIBILITY: bool> {
    row: Row,
    updated: i64,
    close: Option<i64>,
    value: Option<i64>,
}

impl<const C: bool, const V: bool, const S: bool> QueryId for SqliteWriteChanged<C, V, S> {
    type QueryId = Self;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<const CLOSE: bool, const VALUE: bool, const VISIBILITY: bool> QueryFragment<Sqlite>
    for SqliteWriteChanged<CLOSE, VALUE, VISIBILITY>
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        let r = &self.row;
        // `column = ?` for each column named, each bound as its SQL type.
        macro_rules! set {
            ($($column:ident: $sql_type:ty),+ $(,)?) => {$(
                out.push_sql(concat!(", ", stringify!($column), " = "));
                out.push_bind_param::<$sql_type, _>(&r.$column)?;
            )+};
        }
        // The positions first, so that every column after them follows a comma.
        out.push_sql("UPDATE opportunities SET updated_pos = ");
        out.push_bind_param::<BigInt, _>(&self.updated)?;
        out.push_sql(", close_pos = COALESCE(");
        out.push_bind_param::<Nullable<BigInt>, _>(&self.close)?;
        out.push_sql(", close_pos), value_pos = COALESCE(");
        out.push_bind_param::<Nullable<BigInt>, _>(&self.value)?;
        out.push_sql(", value_pos)");
        set!(
            customer_id: sql::Id,
            primary_contact_id: Nullable<sql::Id>,
            site_id: Nullable<sql::Id>,
            title: Text,
            stage: Text,
            pipeline_type: Text,
            source: Nullable<Text>,
            probability: Nullable<Integer>,
            solution_families: sql::Labels,
            scope_summary: Nullable<Text>,
            competitor_notes: Nullable<Text>,
            win_loss_reason: Nullable<Text>,
            next_step_description: Nullable<Text>,
            next_step_date: Nullable<sql::Instant>,
            bid_due_date: Nullable<sql::Instant>,
            budget_confirmed: Bool,
            priority: Nullable<Text>,
            lost_reason_category: Nullable<Text>,
            technical_requirements: Nullable<Text>,
            owner_user_id: sql::Id,
            updated_at: sql::Instant,
            version: Integer,
            archived_at: Nullable<sql::Instant>,
        );
        if CLOSE {
            set!(expected_close_date: Nullable<sql::Instant>);
        }
        if VALUE {
            set!(estimated_value_cents: Nullable<BigInt>);
        }
        if VISIBILITY {
            set!(visibility_mode: Text);
        }
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<sql::Id, _>(&r.id)?;
        Ok(())
    }
}

impl<const C: bool, const V: bool, const S: bool> RunQueryDsl<SqliteConnection> for SqliteWriteChanged<C, V, S> {}

/// Writes a changed opportunity on SQLite ([`SqliteWriteChanged`]): `close` and `value` are the
/// feed positions of its changes of those values (`None`: the group did not change it, and
/// the column is not set), `visibility` whether the group changed its visibility.
pub fn sqlite_write_changed(
    conn: &mut SqliteConnection,
    row: Row,
    updated: i64,
    close: Option<i64>,
    value: Option<i64>,
    visibility: bool,
) -> QueryResult<usize> {
    macro_rules! write {
        ($c:literal, $v:literal, $s:literal) => {
            SqliteWriteChanged::<$c, $v, $s> { row, updated, close, value }.execute(conn)
        };
    }
    match (close.is_some(), value.is_some(), visibility) {
        (false, false, false) => write!(false, false, false),
        (false, false, true) => write!(false, false, true),
        (false, true, false) => write!(false, true, false),
        (false, true, true) => write!(false, true, true),
        (true, false, false) => write!(true, false, false),
        (true, false, true) => write!(true, false, true),
        (true, true, false) => write!(true, true, false),
        (true, true, true) => write!(true, true, true),
    }
}

/// The columns of events on PostgreSQL, each bound as one array, and the start of the
/// statement that appends them: `WITH feed AS (UPDATE opportunity_event_feed … RETURNING
/// last_position, first_position), appended AS (INSERT INTO opportunity_events … SELECT … FROM
/// feed, unnest(…) WITH ORDINALITY …)`. The positions are taken and the events inserted by one
/// statement, one round trip under the position lock, whatever their number.
struct PgEvents {
    n: i64,
    kind: Vec<&'static str>,
    occurred_at: Vec<Instant>,
    workspace_id: Vec<Id>,
    actor: Vec<Id>,
    opportunity_id: Vec<Id>,
    visible_elsewhere: Vec<bool>,
    stage: Vec<&'static str>,
    pipeline_type: Vec<&'static str>,
    owner_user_id: Vec<Id>,
    opportunity: Vec<String>,
}

impl PgEvents {
    fn new(events: Vec<NewEvent>) -> Self {
        let n = events.len();
        let mut rows = Self {
            n: n as i64,
            kind: Vec::with_capacity(n),
            occurred_at: Vec::with_capacity(n),
            workspace_id: Vec::with_capacity(n),
            actor: Vec::with_capacity(n),
            opportunity_id: Vec::with_capacity(n),
            visible_elsewhere: Vec::with_capacity(n),
            stage: Vec::with_capacity(n),
            pipeline_type: Vec::with_capacity(n),
            owner_user_id: Vec::with_capacity(n),
            opportunity: Vec::with_capacity(n),
        };
        for e in events {
            rows.kind.push(e.kind.as_str());
            rows.occurred_at.push(Instant(e.occurred_at));
            rows.workspace_id.push(Id(e.workspace_id));
            rows.actor.push(Id(e.actor));
            rows.opportunity_id.push(Id(e.opportunity_id));
            rows.visible_elsewhere.push(e.visible_elsewhere);
            rows.stage.push(e.stage);
            rows.pipeline_type.push(e.pipeline_type);
            rows.owner_user_id.push(Id(e.owner_user_id));
            rows.opportunity.push(e.opportunity);
        }
        rows
    }

    /// `WITH feed AS (…), appended AS (…)`: the events at the positions `feed.first_position`
    /// … `feed.last_position`, in order.
    fn walk_ast<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH feed AS (UPDATE opportunity_event_feed SET last_position = last_position + ");
        out.push_bind_param::<BigInt, _>(&self.n)?;
        out.push_sql(" WHERE id = 1 RETURNING last_position, last_position - ");
        out.push_bind_param::<BigInt, _>(&self.n)?;
        out.push_sql(
            " + 1 AS first_position), appended AS (INSERT INTO opportunity_events (position, kind, \
             occurred_at, workspace_id, actor, opportunity_id, visible_elsewhere, stage, pipeline_type, \
             owner_user_id, opportunity) SELECT feed.first_position - 1 + e.ord, e.kind, e.occurred_at, e.workspace_id, e.actor, e.opportunity_id, e.visible_elsewhere, \
             e.stage, e.pipeline_type, e.owner_user_id, e.opportunity FROM feed, unnest(",
        );
        out.push_bind_param::<Array<Text>, _>(&self.kind)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql::Instant>, _>(&self.occurred_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql::Id>, _>(&self.workspace_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql::Id>, _>(&self.actor)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql::Id>, _>(&self.opportunity_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Bool>, _>(&self.visible_elsewhere)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.stage)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.pipeline_type)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<sql::Id>, _>(&self.owner_user_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.opportunity)?;
        out.push_sql(
            ") WITH ORDINALITY AS e (kind, occurred_at, workspace_id, actor, opportunity_id, visible_elsewhere, \
             stage, pipeline_type, owner_user_id, opportunity, ord))",
        );
        Ok(())
    }
}

/// Takes the feed positions of `events` under the position lock and inserts them, on
/// PostgreSQL, in one statement whatever their number; answers the last position.
#[derive(QueryId)]
pub struct PgAppendEvents(PgEvents);

impl PgAppendEvents {
    pub fn new(events: Vec<NewEvent>) -> Self {
        Self(PgEvents::new(events))
    }
}

impl QueryFragment<Pg> for PgAppendEvents {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk_ast(&mut out)?;
        out.push_sql(" SELECT last_position FROM feed");
        Ok(())
    }
}

impl Query for PgAppendEvents {
    type SqlType = BigInt;
}

impl RunQueryDsl<PgConnection> for PgAppendEvents {}

/// [`PgAppendEvents`] for a group of changes, which in the same statement gives each changed
/// opportunity the feed positions of its changes: `updated_pos`, and `close_pos` and
/// `value_pos` where the group moved them (a NULL leaves the stored position). The rows come
/// with their offsets in the group (0 for the group's first event). Answers the last position.
#[derive(QueryId)]
pub struct PgAppendChanges {
    events: PgEvents,
    id: Vec<Id>,
    updated: Vec<i64>,
    close: Vec<Option<i64>>,
    value: Vec<Option<i64>>,
}

impl PgAppendChanges {
    /// `events`, and each changed opportunity with its `(updated, close, value)` offsets.
    pub fn new(events: Vec<NewEvent>, rows: Vec<(uuid::Uuid, FeedPositions)>) -> Self {
        let n = rows.len();
        let mut this = Self {
            events: PgEvents::new(events),
            id: Vec::with_capacity(n),
            updated: Vec::with_capacity(n),
            close: Vec::with_capacity(n),
            value: Vec::with_capacity(n),
        };
        for (id, (updated, close, value)) in rows {
            this.id.push(Id(id));
            this.updated.push(updated);
            this.close.push(close);
            this.value.push(value);
        }
        this
    }
}

impl QueryFragment<Pg> for PgAppendChanges {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.events.walk_ast(&mut out)?;
        out.push_sql(
            ", positioned AS (UPDATE opportunities AS o SET updated_pos = feed.first_position + r.updated, \
             close_pos = COALESCE(feed.first_position + r.close, o.close_pos), \
             value_pos = COALESCE(feed.first_position + r.value, o.value_pos) FROM feed, unnest(",
        );
        out.push_bind_param::<Array<sql::Id>, _>(&self.id)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.updated)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<BigInt>>, _>(&self.close)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<BigInt>>, _>(&self.value)?;
        out.push_sql(") AS r (id, updated, close, value) WHERE o.id = r.id) SELECT last_position FROM feed");
        Ok(())
    }
}

impl Query for PgAppendChanges {
    type SqlType = BigInt;
}

impl RunQueryDsl<PgConnection> for PgAppendChanges {}

/// Writes the changed opportunities of a group on PostgreSQL, every column but the feed
/// positions, with one statement whatever their number: the rows are bound as one JSON array
/// that PostgreSQL reads into the table's own row type (`opportunity.rs`, `PgChangedRow`).
#[derive(QueryId)]
pub struct PgWriteChangedRows(pub String);

impl QueryFragment<Pg> for PgWriteChangedRows {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "UPDATE opportunities AS o SET customer_id = r.customer_id, \
             primary_contact_id = r.primary_contact_id, site_id = r.site_id, title = r.title, \
             stage = r.stage, pipeline_type = r.pipeline_type, source = r.source, \
             estimated_value_cents = r.estimated_value_cents, expected_close_date = r.expected_close_date, \
             probability = r.probability, solution_families = r.solution_families, \
             scope_summary = r.scope_summary, competitor_notes = r.competitor_notes, \
             win_loss_reason = r.win_loss_reason, next_step_description = r.next_step_description, \
             next_step_date = r.next_step_date, bid_due_date = r.bid_due_date, \
             budget_confirmed = r.budget_confirmed, priority = r.priority, \
             lost_reason_category = r.lost_reason_category, \
             technical_requirements = r.technical_requirements, owner_user_id = r.owner_user_id, \
             visibility_mode = r.visibility_mode, updated_at = r.updated_at, version = r.version, \
             archived_at = r.archived_at \
             FROM json_populate_recordset(NULL::opportunities, ",
        );
        out.push_bind_param::<Text, _>(&self.0)?;
        out.push_sql("::json) AS r WHERE o.id = r.id");
        Ok(())
    }
}

impl RunQueryDsl<PgConnection> for PgWriteChangedRows {}

/// The feed positions a change gives its row (or their offsets in its group): `updated_pos`,
/// and `close_pos` and `value_pos` where it moved that value (`None` leaves the stored one).
pub type FeedPositions = (i64, Option<i64>, Option<i64>);

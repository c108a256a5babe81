//! `opportunity.list` as one SQL statement, written once for both backends: the filters of
//! CONTRACT.md §8 and a keyset page (the rows after the last one of the previous page in a total
//! order: the ordering field with NULLs last, then `id`, both in the asked direction).
//!
//! The statement is built from fixed fragments; every value a caller sent is a bound parameter.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use diesel::backend::Backend as DieselBackend;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, BoxedSqlQuery, Query, QueryFragment, QueryId, SqlQuery};
use diesel::serialize::ToSql;
use diesel::sql_types::{self, HasSqlType};
use uuid::Uuid;

use super::opportunity::Stored;
use super::types::{Id, Instant, sql};
use super::{DbConn, DbError};
use crate::domain::opportunity::{Money, Opportunity};

/// The case folding of `titleContains`, on both sides of the match: Unicode lowercasing with
/// the final sigma `ς` taken as `σ` (lowercasing writes `Σ` as `ς` at the end of a word, so
/// that `ΟΔΟΣ` and a search for `Σ` would not meet otherwise). SQLite runs this function on the
/// title (`unicode_lower`); PostgreSQL runs the same rules itself, with ICU's lowercasing where
/// the server has ICU (it follows Unicode as Rust does, whatever the database's own locale).
pub fn fold_case(text: &str) -> String {
    text.to_lowercase().replace('ς', "σ")
}

/// The field a list is ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderBy {
    CreatedAt,
    UpdatedAt,
    ExpectedCloseDate,
    EstimatedValue,
}

impl OrderBy {
    /// Every wire value.
    pub const VALUES: &'static [&'static str] = &["createdAt", "updatedAt", "expectedCloseDate", "estimatedValue"];

    /// Parses a wire value.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "createdAt" => Self::CreatedAt,
            "updatedAt" => Self::UpdatedAt,
            "expectedCloseDate" => Self::ExpectedCloseDate,
            "estimatedValue" => Self::EstimatedValue,
            _ => return None,
        })
    }

    /// The wire value.
    pub fn as_str(self) -> &'static str {
        Self::VALUES[self as usize]
    }

    /// Whether opportunities may have no value of this field.
    fn nullable(self) -> bool {
        matches!(self, Self::ExpectedCloseDate | Self::EstimatedValue)
    }

    /// The column holding the feed position of the last change of this ordering value.
    fn changed_at_column(self) -> Option<&'static str> {
        match self {
            Self::CreatedAt => None,
            Self::UpdatedAt => Some("updated_pos"),
            Self::ExpectedCloseDate => Some("close_pos"),
            Self::EstimatedValue => Some("value_pos"),
        }
    }

    fn column(self) -> &'static str {
        match self {
            Self::CreatedAt => "created_at",
            Self::UpdatedAt => "updated_at",
            Self::ExpectedCloseDate => "expected_close_date",
            Self::EstimatedValue => "estimated_value_cents",
        }
    }

    /// The value of this field in an opportunity, for the cursor of the page it ends.
    pub fn value_of(self, o: &Opportunity) -> SortValue {
        match self {
            Self::CreatedAt => SortValue::Instant(o.created_at),
            Self::UpdatedAt => SortValue::Instant(o.updated_at),
            Self::ExpectedCloseDate => o.expected_close_date.map_or(SortValue::Null, SortValue::Instant),
            Self::EstimatedValue => o.estimated_value.map_or(SortValue::Null, SortValue::Money),
        }
    }
}

/// Which archived opportunities a list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Archived {
    #[default]
    Exclude,
    Only,
    Include,
}

/// A value of the ordering field, as a cursor carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortValue {
    Null,
    Instant(DateTime<Utc>),
    Money(Money),
}

/// A list query, checked: every filter of §8, the order, and where the page starts.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// The workspace the call acts in.
    pub workspace: Uuid,
    /// `include: "visible"`: also the shared and global opportunities of other workspaces.
    pub visible: bool,
    pub stages: Option<Vec<&'static str>>,
    pub pipeline_types: Option<Vec<&'static str>>,
    pub priorities: Option<Vec<&'static str>>,
    pub sources: Option<Vec<&'static str>>,
    pub customer_id: Option<Uuid>,
    pub owner_user_id: Option<Uuid>,
    pub site_id: Option<Uuid>,
    pub is_closed: Option<bool>,
    pub archived: Archived,
    pub expected_close_from: Option<DateTime<Utc>>,
    pub expected_close_to: Option<DateTime<Utc>>,
    pub updated_since: Option<DateTime<Utc>>,
    /// Already folded ([`fold_case`]).
    pub title_contains: Option<String>,
    pub order_by: Option<OrderBy>,
    pub descending: bool,
    /// Rows of the page; one more is read to know whether another page follows.
    pub limit: usize,
    /// The last row of the previous page: its ordering value and id.
    pub after: Option<(SortValue, Uuid)>,
    /// The feed's head when the first page was read: later pages leave out what changed its
    /// ordering value since (it may have been returned already).
    pub as_of: Option<i64>,
}

impl ListQuery {
    /// The ordering field (`createdAt` by default).
    pub fn order(&self) -> OrderBy {
        self.order_by.unwrap_or(OrderBy::CreatedAt)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A bound value, typed per backend when bound.
#[derive(Debug, Clone)]
enum Bind {
    Uuid(Uuid),
    Text(String),
    Instant(DateTime<Utc>),
    Money(Money),
    /// A feed position.
    Position(i64),
}

/// SQL text with its bound values, placeholders written for the backend.
struct Statement {
    backend: Backend,
    sql: String,
    binds: Vec<Bind>,
    /// A range filter on an indexed column (`expectedCloseFrom`, `expectedCloseTo`,
    /// `updatedSince`): which index serves the page best depends on the value (a recent
    /// `updatedSince` matches a few rows, best read from its own index and sorted), so such a
    /// statement is planned for its values at every call and never kept ([`kept`]). A plan that
    /// PostgreSQL keeps for any value after five calls would read the ordering index through
    /// the whole workspace for a bound that matches ten rows.
    plan_per_value: bool,
}

impl Statement {
    fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    fn bind(&mut self, value: Bind) -> &mut Self {
        self.binds.push(value);
        match self.backend {
            Backend::Postgres => {
                let n = self.binds.len();
                self.sql.push_str(&format!("${n}"));
            }
            Backend::Sqlite => self.sql.push('?'),
        }
        self
    }

    fn bind_sort(&mut self, value: SortValue) -> &mut Self {
        match value {
            SortValue::Instant(t) => self.bind(Bind::Instant(t)),
            SortValue::Money(m) => self.bind(Bind::Money(m)),
            SortValue::Null => self.push("NULL"),
        }
    }

    fn any_of(&mut self, column: &str, values: &[&'static str]) {
        if values.is_empty() {
            // An empty list matches nothing.
            self.push(" AND 1 = 0");
            return;
        }
        self.push(&format!(" AND {column} IN ("));
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.bind(Bind::Text((*value).to_string()));
        }
        self.push(")");
    }

    /// The filters of the query (and the `as_of` rule of its later pages), after `WHERE `.
    fn filters(&mut self, q: &ListQuery) {
        let backend = self.backend;
        let s = self;
        if q.visible {
            s.push("(workspace_id = ")
                .bind(Bind::Uuid(q.workspace))
                .push(" OR visibility_mode IN ('shared', 'global'))");
        } else {
            s.push("workspace_id = ").bind(Bind::Uuid(q.workspace));
        }
        for (column, values) in [
            ("stage", &q.stages),
            ("pipeline_type", &q.pipeline_types),
            ("priority", &q.priorities),
            ("source", &q.sources),
        ] {
            if let Some(values) = values {
                s.any_of(column, values);
            }
        }
        for (column, value) in
            [("customer_id", q.customer_id), ("owner_user_id", q.owner_user_id), ("site_id", q.site_id)]
        {
            if let Some(value) = value {
                s.push(&format!(" AND {column} = ")).bind(Bind::Uuid(value));
            }
        }
        match q.is_closed {
            Some(true) => s.push(" AND stage IN ('won', 'lost')"),
            Some(false) => s.push(" AND stage NOT IN ('won', 'lost')"),
            None => s,
        };
        match q.archived {
            Archived::Exclude => s.push(" AND archived_at IS NULL"),
            Archived::Only => s.push(" AND archived_at IS NOT NULL"),
            Archived::Include => s,
        };
        if let Some(from) = q.expected_close_from {
            s.push(" AND expected_close_date >= ").bind(Bind::Instant(from));
            s.plan_per_value = true;
        }
        if let Some(to) = q.expected_close_to {
            s.push(" AND expected_close_date < ").bind(Bind::Instant(to));
            s.plan_per_value = true;
        }
        if let Some(since) = q.updated_since {
            s.push(" AND updated_at >= ").bind(Bind::Instant(since));
            s.plan_per_value = true;
        }
        if let Some(needle) = &q.title_contains {
            // A literal substring: no LIKE, so `%`, `_` and `\` are themselves.
            match backend {
                Backend::Postgres => s
                    .push(" AND strpos(translate(lower(title")
                    .push(if super::postgres_has_icu() { r#" COLLATE "und-x-icu""# } else { "" })
                    .push("), 'ς', 'σ'), ")
                    .bind(Bind::Text(needle.clone()))
                    .push(") > 0"),
                Backend::Sqlite => {
                    s.push(" AND instr(unicode_lower(title), ").bind(Bind::Text(needle.clone())).push(") > 0")
                }
            };
        }
        if let (Some(as_of), Some(changed)) = (q.as_of, q.order().changed_at_column()) {
            s.push(&format!(" AND {changed} <= ")).bind(Bind::Position(as_of));
        }
    }

    /// The statements of a page, run in order until they have given `limit + 1` rows. Each is
    /// an index range of (workspace_id, ordering value, id), read forwards or backwards. A page
    /// of a nullable ordering value has two: the rows with a value (after the cursor: `(value,
    /// id) > (v, i)` as a row comparison, a range an index serves where the same rule spelled
    /// with OR is only a filter), then those with none (NULLs last), which are read only when
    /// the first part does not fill the page. One statement with UNION ALL did the same in one
    /// call, but cost every page the second part and a merge: on SQLite 1.1 ms where the two
    /// parts take 0.25 and 0.19 ms, on PostgreSQL the planning of both.
    ///
    /// No part holds both rows with a value and rows without, so none needs `NULLS LAST`, and
    /// the one ascending index of each ordering value serves both directions: PostgreSQL reads
    /// it backwards for `DESC` (NULLs first, which no part has). With `DESC NULLS LAST` in one
    /// statement, PostgreSQL needed a descending index of its own for each nullable value
    /// (migration `2026-12-06-000002_one_index_per_order` dropped them), and each made every
    /// create and update write one more index entry.
    fn build(q: &ListQuery, backend: Backend) -> Vec<Self> {
        let column = q.order().column();
        let (after, dir) = if q.descending { ("<", "DESC") } else { (">", "ASC") };
        let order = format!("ORDER BY {column} {dir}, id {dir} LIMIT {}", q.limit + 1);
        let part = |rule: &dyn Fn(&mut Self)| {
            let mut s = Statement { backend, sql: String::new(), binds: Vec::new(), plan_per_value: false };
            s.push("SELECT ").push(COLUMNS).push(", ").push(HEAD).push(" FROM opportunities WHERE ");
            s.filters(q);
            rule(&mut s);
            s.push(&format!(" {order}"));
            s
        };
        // The rows without a value, ordered as the index is (the NULL value, then id):
        // PostgreSQL does not take `IS NULL` for a constant of the order, so `ORDER BY id`
        // alone made it walk the primary key or sort the workspace's unvalued rows.
        let unvalued = |s: &mut Self| {
            s.push(&format!(" AND {column} IS NULL"));
        };
        let valued = |s: &mut Self| {
            s.push(&format!(" AND {column} IS NOT NULL"));
        };
        match q.after {
            None if q.order().nullable() => vec![part(&valued), part(&unvalued)],
            None => vec![part(&|_| {})],
            Some((SortValue::Null, id)) => vec![part(&|s| {
                unvalued(s);
                s.push(&format!(" AND id {after} ")).bind(Bind::Uuid(id));
            })],
            Some((value, id)) => {
                // The row comparison holds for no NULL: these rows all have a value.
                let later = part(&|s| {
                    s.push(&format!(" AND ({column}, id) {after} (")).bind_sort(value).push(", ");
                    s.bind(Bind::Uuid(id)).push(")");
                });
                if q.order().nullable() { vec![later, part(&unvalued)] } else { vec![later] }
            }
        }
    }
}

/// The columns a page reads, those of [`Stored`], named: a `SELECT *` kept prepared would fail
/// on PostgreSQL ("cached plan must not change result type") in a process that runs while a
/// newer one adds a column, and the feed positions (`updated_pos`, `close_pos`, `value_pos`) are
/// not part of an answer.
const COLUMNS: &str = "id, workspace_id, customer_id, primary_contact_id, site_id, title, stage, pipeline_type, \
    source, estimated_value_cents, expected_close_date, probability, solution_families, scope_summary, \
    competitor_notes, win_loss_reason, next_step_description, next_step_date, bid_due_date, budget_confirmed, \
    priority, lost_reason_category, technical_requirements, owner_user_id, visibility_mode, created_by, \
    created_at, updated_at, version, archived_at";

/// The feed's head, read by each statement of a page with its rows, in its snapshot ([`list`]).
const HEAD: &str = "(SELECT last_position FROM opportunity_event_feed WHERE id = 1) AS head";

/// How many list statement texts (shapes: the filters present, the length of each `IN` list, the
/// order, the direction, the page's part and the limit; never the values, which are bound) the
/// process keeps prepared on its connections.
///
/// diesel never keeps a `sql_query` prepared, so each page was parsed and planned anew (on
/// PostgreSQL, `pgbench -M prepared` against `-M extended` on the bench's first page: 10–13% more
/// pages a second). Kept by its text, a statement would be kept for good: diesel's statement
/// cache has no bound and no eviction, and the shapes a caller can make are many. So the first
/// `KEPT_SHAPES` texts seen are kept, on each connection that runs them, and any other shape is
/// prepared for its one run as before. The dashboards' few shapes come first in practice; a
/// caller that sends many shapes makes only its own later shapes slower, never memory grow.
pub const KEPT_SHAPES: usize = 64;

/// The statement texts kept prepared (at most [`KEPT_SHAPES`]).
static KEPT: std::sync::LazyLock<std::sync::Mutex<HashSet<String>>> = std::sync::LazyLock::new(Default::default);

/// Whether the statement `sql` is kept prepared: it was seen before, or there is room for it.
fn keep(sql: &str) -> bool {
    keep_in(&mut KEPT.lock().unwrap_or_else(std::sync::PoisonError::into_inner), sql, KEPT_SHAPES)
}

/// Whether `sql` is among `kept`, adding it while there are fewer than `room`.
fn keep_in(kept: &mut HashSet<String>, sql: &str, room: usize) -> bool {
    if kept.contains(sql) {
        return true;
    }
    kept.len() < room && kept.insert(sql.to_owned())
}

/// The SQL type of a page's rows: those of [`COLUMNS`], in order, which diesel then reads by
/// position. A `sql_query` reads each field by its name, which looked each up among the row's
/// columns (`PgRow::idx`: 5% of the service's CPU under list pages).
type Row<DB> = diesel::dsl::SqlTypeOf<diesel::dsl::AsSelect<Stored, DB>>;

/// A `sql_query` whose rows are of the SQL type `ST`, which diesel keeps prepared (keyed by its
/// text and bind types) when `keep` says so: `SqlQuery` itself always says it is unsafe to cache.
struct Kept<Q, ST> {
    query: Q,
    keep: bool,
    rows: std::marker::PhantomData<ST>,
}

/// The statement `s` as a [`Kept`] query of rows of `ST` ([`Row`]).
fn kept<DB: DieselBackend, ST>(s: &Statement) -> Kept<BoxedSqlQuery<'static, DB, SqlQuery>, ST>
where
    BoxedSqlQuery<'static, DB, SqlQuery>: Bound,
{
    Kept {
        query: diesel::sql_query(s.sql.as_str()).into_boxed().bound(&s.binds),
        keep: !s.plan_per_value && keep(&s.sql),
        rows: std::marker::PhantomData,
    }
}

impl<DB: DieselBackend, Q: QueryFragment<DB>, ST> QueryFragment<DB> for Kept<Q, ST> {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.query.walk_ast(out)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &DB) -> QueryResult<bool> {
        Ok(self.keep)
    }
}

impl<Q, ST> QueryId for Kept<Q, ST> {
    type QueryId = ();
    // No type of its own: diesel keys the statement by its SQL text and bind types.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q, ST> Query for Kept<Q, ST> {
    type SqlType = ST;
}

impl<Q, ST, C> RunQueryDsl<C> for Kept<Q, ST> {}

/// A `sql_query` of either backend that takes [`Bind`]s.
trait Bound: Sized {
    /// Binds each value as its column's type.
    fn bound(self, values: &[Bind]) -> Self;
}

impl<DB> Bound for BoxedSqlQuery<'static, DB, SqlQuery>
where
    DB: DieselBackend + HasSqlType<sql::Id> + HasSqlType<sql::Instant> + HasSqlType<sql_types::Text>,
    DB: HasSqlType<sql_types::BigInt>,
    Id: ToSql<sql::Id, DB>,
    Instant: ToSql<sql::Instant, DB>,
    String: ToSql<sql_types::Text, DB>,
    i64: ToSql<sql_types::BigInt, DB>,
{
    fn bound(self, values: &[Bind]) -> Self {
        values.iter().cloned().fold(self, |query, value| match value {
            Bind::Uuid(u) => query.bind::<sql::Id, _>(Id(u)),
            Bind::Text(t) => query.bind::<sql_types::Text, _>(t),
            Bind::Instant(t) => query.bind::<sql::Instant, _>(Instant(t)),
            Bind::Money(m) => query.bind::<sql_types::BigInt, _>(m.cents()),
            Bind::Position(p) => query.bind::<sql_types::BigInt, _>(p),
        })
    }
}

/// One page of a list: up to `limit` opportunities, whether more follow, and the feed's head
/// in the snapshot of its first rows (the `as_of` of the pages that follow a first page; `None`
/// when the page is empty).
///
/// Each statement reads the head with its rows (`HEAD`), in its own snapshot, so that a page
/// whose first statement fills it, or that has only one, is one trip to the database. It had
/// been four (BEGIN, the head, the rows, COMMIT); with `pgbench -M prepared` at 32 clients on the
/// bench's first page, 3,718 and 3,246 transactions a second against 3,242 and 2,875.
///
/// A page whose rows with a value of a nullable order do not fill it reads the rows without
/// one with a second statement, in a snapshot of its own, as the page after it would: leaving
/// out what changed its ordering value after the first statement's snapshot (`as_of` at the
/// first statement's head). An opportunity whose value was cleared in between is then read by
/// the first statement only, with its old value, never by both; one that has no value and kept
/// it is read by the second. The rows of both statements stay a page of the same cursor, two
/// trips in all, where reading both again in one REPEATABLE READ transaction took five.
pub fn list(mut conn: DbConn<'_>, q: &ListQuery) -> Result<(Vec<Opportunity>, bool, Option<i64>), DbError> {
    let backend = match conn {
        DbConn::Postgres(_) => Backend::Postgres,
        DbConn::Sqlite(_) => Backend::Sqlite,
    };
    let mut statements = Statement::build(q, backend);
    let load = |conn: DbConn<'_>, s: &Statement| -> Result<Vec<(Stored, i64)>, DbError> {
        match conn {
            DbConn::Postgres(c) => kept::<diesel::pg::Pg, (Row<_>, sql_types::BigInt)>(s).load(c),
            DbConn::Sqlite(c) => kept::<diesel::sqlite::Sqlite, (Row<_>, sql_types::BigInt)>(s).load(c),
        }
        .map_err(DbError::classify)
    };
    let mut rows = load(conn.reborrow(), &statements[0])?;
    let head = rows.first().map(|(_, head)| *head);
    if rows.len() <= q.limit && statements.len() > 1 {
        let second = match (q.as_of, head) {
            // A first page: the second statement is read against the first one's head.
            (None, Some(head)) => Statement::build(&ListQuery { as_of: Some(head), ..q.clone() }, backend).pop(),
            // A later page is read against its cursor's head already; a first statement with
            // no rows leaves nothing to read twice.
            _ => statements.pop(),
        };
        rows.extend(load(conn, &second.expect("a second statement"))?);
    }
    let head = head.or_else(|| rows.first().map(|(_, head)| *head));
    let mut rows = rows.into_iter().map(|(row, _)| Opportunity::try_from(row)).collect::<Result<Vec<_>, _>>()?;
    let more = rows.len() > q.limit;
    rows.truncate(q.limit);
    Ok((rows, more, head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_bound_never_written_into_the_sql() {
        let q = ListQuery {
            workspace: Uuid::nil(),
            title_contains: Some("'; drop table opportunities; --".into()),
            stages: Some(vec!["lead", "won"]),
            limit: 50,
            descending: true,
            after: Some((SortValue::Null, Uuid::nil())),
            order_by: Some(OrderBy::ExpectedCloseDate),
            ..Default::default()
        };
        let [pg] = &Statement::build(&q, Backend::Postgres)[..] else { panic!("one statement") };
        assert!(!pg.sql.contains("drop table"), "{}", pg.sql);
        assert_eq!(pg.binds.len(), 5, "{}", pg.sql);
        assert!(pg.sql.contains("$5"), "{}", pg.sql);
        assert!(pg.sql.ends_with("ORDER BY expected_close_date DESC, id DESC LIMIT 51"), "{}", pg.sql);
        let [lite] = &Statement::build(&q, Backend::Sqlite)[..] else { panic!("one statement") };
        assert_eq!(lite.sql.matches('?').count(), 5, "{}", lite.sql);
    }

    /// Every query a list page runs, for each order and direction: the first page, a later
    /// page after a row with a value, and one after a row without (nullable orders), each with
    /// the bench's stage filter and without.
    fn every_page() -> Vec<ListQuery> {
        let id = Uuid::from_u128(7);
        let mut queries = Vec::new();
        for order in OrderBy::VALUES.iter().map(|v| OrderBy::parse(v).unwrap()) {
            let value = match order {
                OrderBy::EstimatedValue => SortValue::Money(Money::from_cents(12_500_050)),
                _ => SortValue::Instant(DateTime::UNIX_EPOCH),
            };
            let mut afters = vec![None, Some((value, id))];
            if order.nullable() {
                afters.push(Some((SortValue::Null, id)));
            }
            for descending in [false, true] {
                for after in &afters {
                    for stages in [None, Some(vec!["negotiation", "proposal"])] {
                        queries.push(ListQuery {
                            workspace: Uuid::from_u128(1),
                            stages,
                            order_by: Some(order),
                            descending,
                            limit: 50,
                            after: *after,
                            as_of: after.map(|_| 100),
                            ..Default::default()
                        });
                    }
                }
            }
        }
        queries
    }

    /// A page reads its columns by position: [`COLUMNS`] must be the fields of [`Stored`] in the
    /// order diesel reads them (two columns of one type swapped would read silently wrong).
    #[test]
    fn the_columns_of_a_page_are_the_stored_fields_in_order() {
        use crate::db::schema::opportunities as t;
        let select =
            diesel::debug_query::<diesel::sqlite::Sqlite, _>(&t::table.select(Stored::as_select())).to_string();
        let fields = select.strip_prefix("SELECT ").and_then(|s| s.split_once(" FROM")).expect(&select).0;
        let fields: Vec<String> =
            fields.split(", ").map(|f| f.replace("`opportunities`.", "").replace('`', "")).collect();
        let columns: Vec<&str> = COLUMNS.split(", ").collect();
        assert_eq!(columns, fields);
    }

    /// The first `room` statement texts are kept, and those only: the texts a caller can make are
    /// many, and each kept one stays prepared on every connection that ran it.
    #[test]
    fn only_the_first_shapes_are_kept_prepared() {
        let mut kept = HashSet::new();
        for n in 0..3 {
            assert!(keep_in(&mut kept, &format!("SELECT {n}"), 3), "shape {n} has room");
        }
        assert!(!keep_in(&mut kept, "SELECT 3", 3), "no room for a fourth shape");
        assert!(keep_in(&mut kept, "SELECT 1", 3), "a kept shape stays kept");
        assert_eq!(kept, HashSet::from(["SELECT 0", "SELECT 1", "SELECT 2"].map(String::from)));
    }

    use crate::db::opportunity::tests::{CachedStatements, sqlite_with};

    /// The list statements among `statements`.
    fn of_lists(statements: Vec<String>) -> Vec<String> {
        statements.into_iter().filter(|sql| sql.contains("FROM opportunities WHERE")).collect()
    }

    /// Pages of one shape (a first page, then later pages of other positions and cursors) are
    /// prepared once on a connection and kept: the values are bound, never written in the SQL.
    fn pages_are_prepared_once(mut conn: DbConn<'_>, prepared: &CachedStatements) {
        let first = ListQuery {
            workspace: Uuid::now_v7(),
            stages: Some(vec!["negotiation", "proposal"]),
            order_by: Some(OrderBy::ExpectedCloseDate),
            limit: 50,
            ..Default::default()
        };
        list(conn.reborrow(), &first).unwrap();
        assert_eq!(of_lists(prepared.take()).len(), 2, "both parts of a first page by a nullable value are kept");
        list(conn.reborrow(), &ListQuery { workspace: Uuid::now_v7(), ..first.clone() }).unwrap();
        assert_eq!(of_lists(prepared.take()), Vec::<String>::new(), "another workspace, the same statements");
        for (n, as_of) in [(2, 10), (0, 11), (0, 12)] {
            let later = ListQuery {
                after: Some((SortValue::Instant(Utc::now()), Uuid::now_v7())),
                as_of: Some(as_of),
                ..first.clone()
            };
            list(conn.reborrow(), &later).unwrap();
            // Both parts again (the table is empty): each now holds the position's rule.
            assert_eq!(of_lists(prepared.take()).len(), n, "a later page at position {as_of}");
        }
        // A range filter's value decides the plan: planned at every call, never kept.
        for since in [Utc::now(), Utc::now() - chrono::Duration::days(365)] {
            list(conn.reborrow(), &ListQuery { updated_since: Some(since), ..first.clone() }).unwrap();
            assert_eq!(of_lists(prepared.take()), Vec::<String>::new(), "a page updated since {since}");
        }
    }

    /// A page that its first statement fills is that one statement (no transaction around it),
    /// and answers the feed's head read with its rows; one that needs the second statement reads
    /// both in one transaction.
    #[test]
    fn a_page_its_first_statement_fills_is_one_trip_to_the_database() {
        let stored = in_one_workspace(&[Some(0), Some(1), Some(2)]);
        let workspace = stored[0].workspace_id;
        let (mut conn, sent, _dir) = sqlite_with(&stored.iter().collect::<Vec<_>>());
        diesel::sql_query("UPDATE opportunity_event_feed SET last_position = 41 WHERE id = 1")
            .execute(&mut conn)
            .unwrap();
        sent.take_sent();
        let q = ListQuery { workspace, order_by: Some(OrderBy::ExpectedCloseDate), limit: 2, ..Default::default() };
        let (rows, more, head) = list(DbConn::Sqlite(&mut conn), &q).unwrap();
        assert_eq!((rows.len(), more, head), (2, true, Some(41)));
        let trips = sent.take_sent();
        assert!(matches!(&trips[..], [one] if one.contains("FROM opportunities WHERE")), "{trips:#?}");
        // Three rows do not fill a page of 3 + 1: the rows without a date are read too, by a
        // second statement, against the first one's head, with no transaction either.
        let (rows, more, head) = list(DbConn::Sqlite(&mut conn), &ListQuery { limit: 3, ..q }).unwrap();
        assert_eq!((rows.len(), more, head), (3, false, Some(41)));
        let trips = sent.take_sent();
        assert!(
            matches!(&trips[..], [first, second] if first.contains("expected_close_date IS NOT NULL ORDER BY")
                && second.contains("close_pos <= ? AND expected_close_date IS NULL ORDER BY")),
            "{trips:#?}"
        );
    }

    /// Watches a connection and runs `change` (once, on a connection of its own) just before
    /// the watched one sends the second statement of a page: the rows without a value.
    struct Between {
        change: Option<Box<dyn FnOnce() + Send>>,
    }

    impl diesel::connection::Instrumentation for Between {
        fn on_connection_event(&mut self, event: diesel::connection::InstrumentationEvent<'_>) {
            if let diesel::connection::InstrumentationEvent::StartQuery { query, .. } = event
                && query.to_string().contains("expected_close_date IS NULL")
                && let Some(change) = self.change.take()
            {
                change();
            }
        }
    }

    /// Opportunities of one new workspace, one a close date (`Some(day)`, days after 1970) or none.
    fn in_one_workspace(close_days: &[Option<i64>]) -> Vec<Opportunity> {
        let workspace = Uuid::now_v7();
        close_days
            .iter()
            .map(|day| {
                let input = crate::domain::opportunity::CreateOpportunity {
                    customer_id: Some(Uuid::now_v7()),
                    title: Some(format!("due {day:?}")),
                    pipeline_type: Some(crate::domain::opportunity::PipelineType::Retrofit),
                    expected_close_date: day.map(|d| DateTime::UNIX_EPOCH + chrono::Duration::days(d)),
                    ..Default::default()
                };
                Opportunity::new(input, workspace, Uuid::nil(), Utc::now()).unwrap()
            })
            .collect()
    }

    impl Between {
        /// Clears the close date of `id` with `run`, which sends SQL on a connection of its own.
        fn clearing_the_date(id: Uuid, mut run: impl FnMut(&str) + Send + 'static) -> Self {
            Self { change: Some(Box::new(move || clear_the_date_sql(id).iter().for_each(|sql| run(sql)))) }
        }
    }

    /// What a change that clears an opportunity's close date leaves in the tables: the row
    /// without its date, its `close_pos` and the feed's head at the next position.
    fn clear_the_date_sql(id: Uuid) -> [String; 2] {
        [
            format!(
                "UPDATE opportunities SET expected_close_date = NULL, \
                 close_pos = (SELECT last_position + 1 FROM opportunity_event_feed WHERE id = 1), \
                 updated_pos = (SELECT last_position + 1 FROM opportunity_event_feed WHERE id = 1) \
                 WHERE id = '{id}'"
            ),
            "UPDATE opportunity_event_feed SET last_position = last_position + 1 WHERE id = 1".to_string(),
        ]
    }

    /// A first page by close date whose dated rows do not fill it, while the date of one of them
    /// is cleared between its two statements: the page holds that opportunity once (with its
    /// old date, from the first statement), and the cursor's head leaves it out of what follows.
    fn a_date_cleared_between_the_statements_of_a_page(mut conn: DbConn<'_>, stored: &[Opportunity]) {
        let [day1, day2, undated] = [&stored[0], &stored[1], &stored[2]];
        let q = ListQuery {
            workspace: day1.workspace_id,
            order_by: Some(OrderBy::ExpectedCloseDate),
            descending: true,
            limit: 10,
            ..Default::default()
        };
        let (rows, more, head) = list(conn.reborrow(), &q).unwrap();
        let ids: Vec<Uuid> = rows.iter().map(|o| o.id).collect();
        assert_eq!(ids, [day2.id, day1.id, undated.id], "each once: {rows:#?}");
        assert!(rows[1].expected_close_date.is_some(), "read by the first statement, as it was");
        assert!(!more);
        // The same query afresh sees the change: day 1 is among the undated now (ids descending).
        let (rows, _, later) = list(conn, &q).unwrap();
        let ids: Vec<Uuid> = rows.iter().map(|o| o.id).collect();
        assert_eq!(ids, [day2.id, undated.id, day1.id]);
        assert_eq!(later, head.map(|h| h + 1), "the feed moved on by the change");
    }

    #[test]
    fn a_date_cleared_between_the_statements_of_a_page_on_sqlite() {
        let stored = in_one_workspace(&[Some(1), Some(2), None]);
        let (mut conn, _, dir) = sqlite_with(&stored.iter().collect::<Vec<_>>());
        let path = dir.path().join("c.db");
        let mut other = crate::db::establish_sqlite(&path).unwrap();
        let run = move |sql: &str| _ = diesel::sql_query(sql).execute(&mut other).unwrap();
        conn.set_instrumentation(Between::clearing_the_date(stored[0].id, run));
        a_date_cleared_between_the_statements_of_a_page(DbConn::Sqlite(&mut conn), &stored);
    }

    #[test]
    fn a_date_cleared_between_the_statements_of_a_page_on_postgres() {
        let test = "a_date_cleared_between_the_statements_of_a_page_on_postgres";
        let Some((mut conn, guard)) = crate::db::opportunity::tests::postgres_database(test) else {
            return;
        };
        let stored = in_one_workspace(&[Some(1), Some(2), None]);
        let rows: Vec<crate::db::opportunity::Row> = stored.iter().map(crate::db::opportunity::Row::new).collect();
        diesel::insert_into(crate::db::schema::opportunities::table).values(&rows).execute(&mut conn).unwrap();
        let url = guard.url();
        let mut other = PgConnection::establish(&url).unwrap();
        let run = move |sql: &str| _ = diesel::sql_query(sql).execute(&mut other).unwrap();
        conn.set_instrumentation(Between::clearing_the_date(stored[0].id, run));
        a_date_cleared_between_the_statements_of_a_page(DbConn::Postgres(&mut conn), &stored);
    }

    #[test]
    fn list_pages_are_prepared_once_and_kept_on_sqlite() {
        let (mut conn, prepared, _dir) = sqlite_with(&[]);
        pages_are_prepared_once(DbConn::Sqlite(&mut conn), &prepared);
    }

    #[test]
    fn list_pages_are_prepared_once_and_kept_on_postgres() {
        let test = "list_pages_are_prepared_once_and_kept_on_postgres";
        let Some((mut conn, _guard)) = crate::db::opportunity::tests::postgres_database(test) else {
            return;
        };
        let prepared = CachedStatements::default();
        conn.set_instrumentation(prepared.clone());
        pages_are_prepared_once(DbConn::Postgres(&mut conn), &prepared);
    }

    #[derive(QueryableByName)]
    struct PgPlanLine {
        #[diesel(sql_type = sql_types::Text, column_name = "QUERY PLAN")]
        line: String,
    }

    #[derive(QueryableByName)]
    struct SqlitePlanLine {
        #[diesel(sql_type = sql_types::Text)]
        detail: String,
    }

    /// Each statement of every page reads an index in the page's order, on PostgreSQL: its
    /// plan sorts nothing, with sorting and sequential scans priced out (the test's table is
    /// empty, where a sort would otherwise be cheapest), so that a missing index shows as a
    /// Sort node. Nothing else keeps the list from sorting a million rows per page.
    #[test]
    fn every_list_statement_reads_an_index_in_order_on_postgres() {
        let test = "every_list_statement_reads_an_index_in_order_on_postgres";
        let Some((mut conn, _guard)) = crate::db::opportunity::tests::postgres_database(test) else {
            return;
        };
        diesel::sql_query("SET enable_sort = off").execute(&mut conn).unwrap();
        diesel::sql_query("SET enable_seqscan = off").execute(&mut conn).unwrap();
        // A kept statement is planned for its values five times, then PostgreSQL may keep a
        // generic plan, for any values: both must read the index in order.
        for (mode, q) in ["force_custom_plan", "force_generic_plan"]
            .into_iter()
            .flat_map(|m| every_page().into_iter().map(move |q| (m, q)))
        {
            diesel::sql_query(format!("SET plan_cache_mode = {mode}")).execute(&mut conn).unwrap();
            for s in Statement::build(&q, Backend::Postgres) {
                let explain = diesel::sql_query(format!("EXPLAIN {}", s.sql)).into_boxed();
                let plan: Vec<PgPlanLine> = explain.bound(&s.binds).load(&mut conn).unwrap();
                let plan: Vec<String> = plan.into_iter().map(|l| l.line).collect();
                assert!(
                    !plan.iter().any(|l| l.contains("Sort")) && plan.iter().any(|l| l.contains("Index Scan")),
                    "{mode}: {}\n{plan:#?}",
                    s.sql
                );
            }
        }
    }

    /// The same on SQLite: no statement of any page needs a temporary b-tree for its order.
    #[tokio::test]
    async fn every_list_statement_reads_an_index_in_order_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::db::DatabaseUrl::Sqlite(dir.path().join("plans.db"));
        let options = crate::db::PoolOptions { size: Some(1), timeout: std::time::Duration::from_secs(10) };
        let db = crate::db::Database::connect(url, options).unwrap();
        db.run(|conn| {
            let DbConn::Sqlite(conn) = conn else { unreachable!("a SQLite database") };
            for q in every_page() {
                for s in Statement::build(&q, Backend::Sqlite) {
                    let explain = diesel::sql_query(format!("EXPLAIN QUERY PLAN {}", s.sql)).into_boxed();
                    let plan: Vec<SqlitePlanLine> = explain.bound(&s.binds).load(conn).map_err(DbError::classify)?;
                    let plan: Vec<String> = plan.into_iter().map(|l| l.detail).collect();
                    assert!(
                        !plan.iter().any(|l| l.contains("TEMP B-TREE")) && plan.iter().any(|l| l.contains("INDEX")),
                        "{}\n{plan:#?}",
                        s.sql
                    );
                }
            }
            Ok(())
        })
        .await
        .unwrap();
    }

    /// `bench/run` measures the list against its limit, pgbench running the service's own
    /// statements, and writes their plans: it reads them from `bench/list-first.sql` and
    /// `bench/list-deep.sql`, which must be what [`Statement::build`] writes for the bench's
    /// params (stages proposal and negotiation, by expectedCloseDate, 50 a page; the deep page
    /// after a valued row, its `as_of` a bound parameter like the cursor's values). The first
    /// statement of each page, the rows with a date, fills it (the workspace's rows with no date
    /// are far behind), so it is the one the bench runs. Run with `UPDATE_BENCH_SQL=1` to rewrite them after a change
    /// of the statements.
    #[test]
    fn the_bench_runs_the_services_list_statements() {
        let first = ListQuery {
            workspace: Uuid::nil(),
            stages: Some(vec!["negotiation", "proposal"]),
            order_by: Some(OrderBy::ExpectedCloseDate),
            descending: true,
            limit: 50,
            ..Default::default()
        };
        let deep = ListQuery {
            after: Some((SortValue::Instant(DateTime::UNIX_EPOCH), Uuid::nil())),
            as_of: Some(i64::MAX),
            ..first.clone()
        };
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench");
        for (name, q) in [("list-first.sql", first), ("list-deep.sql", deep)] {
            let sql = format!("{}\n", Statement::build(&q, Backend::Postgres)[0].sql);
            let path = dir.join(name);
            if std::env::var_os("UPDATE_BENCH_SQL").is_some() {
                std::fs::write(&path, &sql).unwrap();
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert_eq!(
                committed, sql,
                "bench/{name} is not the service's statement: UPDATE_BENCH_SQL=1 cargo test rewrites it"
            );
        }
    }
}

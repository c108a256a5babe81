//! Statements that diesel keeps prepared on each connection, where its query builder would
//! prepare them anew on every call: an INSERT of a fixed number of rows, and the two UPDATEs of
//! every write (diesel never keeps an UPDATE: `UpdateStatement` is marked unsafe to cache). A
//! type here has a static query id and says nothing that makes it unsafe to cache, so diesel's
//! statement cache keeps it per connection; on PostgreSQL that saves a parse and a plan per
//! statement, on SQLite the compilation of the statement.

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, HasSqlType, Nullable, Text};
use diesel::sqlite::Sqlite;
use diesel::{AsChangeset, QueryResult, RunQueryDsl, SqliteConnection};

use super::opportunity::SqliteRow;

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
/// last_position`, on either backend.
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

/// Writes a changed opportunity on SQLite with the feed positions of its change: every column
/// of the row, `updated_pos`, and `close_pos` and `value_pos` where the change moved them (a
/// NULL leaves the stored position).
#[derive(QueryId)]
pub struct SqliteWriteChanged {
    id: String,
    row: <SqliteRow as AsChangeset>::Changeset,
    updated: i64,
    close: Option<i64>,
    value: Option<i64>,
}

impl SqliteWriteChanged {
    pub fn new(row: SqliteRow, updated: i64, close: Option<i64>, value: Option<i64>) -> Self {
        Self { id: row.id.clone(), row: row.as_changeset(), updated, close, value }
    }
}

impl QueryFragment<Sqlite> for SqliteWriteChanged {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("UPDATE opportunities SET ");
        self.row.walk_ast(out.reborrow())?;
        out.push_sql(", updated_pos = ");
        out.push_bind_param::<BigInt, _>(&self.updated)?;
        out.push_sql(", close_pos = COALESCE(");
        out.push_bind_param::<Nullable<BigInt>, _>(&self.close)?;
        out.push_sql(", close_pos), value_pos = COALESCE(");
        out.push_bind_param::<Nullable<BigInt>, _>(&self.value)?;
        out.push_sql(", value_pos) WHERE id = ");
        out.push_bind_param::<Text, _>(&self.id)?;
        Ok(())
    }
}

impl RunQueryDsl<SqliteConnection> for SqliteWriteChanged {}

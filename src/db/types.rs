//! The column types that the two backends store differently, so that one schema
//! (`schema.rs`), one row model and one query serve both. Each is a SQL type of our own that
//! names the native type of each backend, and a Rust value that converts to and from both:
//!
//! | SQL type     | PostgreSQL    | SQLite                                            | Rust          |
//! |--------------|---------------|---------------------------------------------------|---------------|
//! | [`sql::Id`]      | `uuid`        | `TEXT`, lowercase hyphenated                      | [`Id`]        |
//! | [`sql::Instant`] | `timestamptz` | `TEXT`, UTC, six fractional digits (sorts in time order) | [`Instant`] |
//! | [`sql::Labels`]  | `text[]`      | `TEXT`, a JSON array of strings                   | [`Labels`]    |
//!
//! Money is `BIGINT` cents on both (exact), and every other column has a type both backends
//! share.

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sqlite::{Sqlite, SqliteValue};

/// The SQL types, for `table!` (`schema.rs`) and for bound parameters.
pub mod sql {
    /// A UUID: `uuid` on PostgreSQL, `TEXT` on SQLite.
    #[derive(Debug, Clone, Copy, Default, diesel::sql_types::SqlType, diesel::query_builder::QueryId)]
    #[diesel(postgres_type(oid = 2950, array_oid = 2951))]
    #[diesel(sqlite_type(name = "Text"))]
    pub struct Id;

    /// An instant: `timestamptz` on PostgreSQL, fixed-width RFC 3339 `TEXT` in UTC on SQLite.
    #[derive(Debug, Clone, Copy, Default, diesel::sql_types::SqlType, diesel::query_builder::QueryId)]
    #[diesel(postgres_type(oid = 1184, array_oid = 1185))]
    #[diesel(sqlite_type(name = "Text"))]
    pub struct Instant;

    /// A list of strings: `text[]` on PostgreSQL, a JSON array in `TEXT` on SQLite.
    #[derive(Debug, Clone, Copy, Default, diesel::sql_types::SqlType, diesel::query_builder::QueryId)]
    #[diesel(postgres_type(oid = 1009, array_oid = 1009))]
    #[diesel(sqlite_type(name = "Text"))]
    pub struct Labels;
}

/// A UUID as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, AsExpression, FromSqlRow)]
#[diesel(sql_type = sql::Id)]
pub struct Id(pub uuid::Uuid);

/// An instant as stored (microseconds, as both backends keep it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, AsExpression, FromSqlRow)]
#[diesel(sql_type = sql::Instant)]
pub struct Instant(pub DateTime<Utc>);

/// A list of strings as stored.
#[derive(Debug, Clone, PartialEq, Eq, AsExpression, FromSqlRow)]
#[diesel(sql_type = sql::Labels)]
pub struct Labels(pub Vec<String>);

/// The SQLite text of an instant: fixed width (`%Y-%m-%dT%H:%M:%S%.6fZ`), so that text order
/// is time order.
fn sqlite_instant(instant: &DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn stored<T>(what: &str, text: &str, value: Option<T>) -> deserialize::Result<T> {
    value.ok_or_else(|| format!("stored {what} {text:?} is not valid").into())
}

impl ToSql<sql::Id, Pg> for Id {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <uuid::Uuid as ToSql<diesel::sql_types::Uuid, Pg>>::to_sql(&self.0, out)
    }
}

impl FromSql<sql::Id, Pg> for Id {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        <uuid::Uuid as FromSql<diesel::sql_types::Uuid, Pg>>::from_sql(bytes).map(Self)
    }
}

impl ToSql<sql::Id, Sqlite> for Id {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(self.0.hyphenated().to_string());
        Ok(IsNull::No)
    }
}

impl FromSql<sql::Id, Sqlite> for Id {
    fn from_sql(mut value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
        let text = value.read_text();
        stored("uuid", text, uuid::Uuid::try_parse(text).ok()).map(Self)
    }
}

impl ToSql<sql::Instant, Pg> for Instant {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <DateTime<Utc> as ToSql<diesel::sql_types::Timestamptz, Pg>>::to_sql(&self.0, out)
    }
}

impl FromSql<sql::Instant, Pg> for Instant {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        <DateTime<Utc> as FromSql<diesel::sql_types::Timestamptz, Pg>>::from_sql(bytes).map(Self)
    }
}

impl ToSql<sql::Instant, Sqlite> for Instant {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(sqlite_instant(&self.0));
        Ok(IsNull::No)
    }
}

impl FromSql<sql::Instant, Sqlite> for Instant {
    fn from_sql(mut value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
        let text = value.read_text();
        let instant = DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc));
        stored("instant", text, instant).map(Self)
    }
}

impl ToSql<sql::Labels, Pg> for Labels {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <Vec<String> as ToSql<diesel::sql_types::Array<diesel::sql_types::Text>, Pg>>::to_sql(&self.0, out)
    }
}

impl FromSql<sql::Labels, Pg> for Labels {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        <Vec<String> as FromSql<diesel::sql_types::Array<diesel::sql_types::Text>, Pg>>::from_sql(bytes).map(Self)
    }
}

impl ToSql<sql::Labels, Sqlite> for Labels {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(serde_json::to_string(&self.0)?);
        Ok(IsNull::No)
    }
}

impl FromSql<sql::Labels, Sqlite> for Labels {
    fn from_sql(mut value: SqliteValue<'_, '_, '_>) -> deserialize::Result<Self> {
        let text = value.read_text();
        stored("list", text, serde_json::from_str(text).ok()).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_instants_have_a_fixed_width() {
        let at = |text: &str| DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc);
        assert_eq!(sqlite_instant(&at("2026-12-01T09:30:00+02:00")), "2026-12-01T07:30:00.000000Z");
        assert_eq!(sqlite_instant(&at("1970-01-01T00:00:00.5Z")), "1970-01-01T00:00:00.500000Z");
        assert_eq!(sqlite_instant(&at("2199-12-31T23:59:59.123456Z")), "2199-12-31T23:59:59.123456Z");
    }
}

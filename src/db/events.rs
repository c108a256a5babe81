//! The change feed's storage (CONTRACT.md §9): events appended in the transaction of the change
//! they record, read back in position order, purged after `EVENT_RETENTION`.
//!
//! Positions come from the one row of `opportunity_event_feed`. A writing transaction takes
//! that row's lock with `UPDATE … RETURNING` as its last step before COMMIT (one lock per group
//! commit; a group of changes then only marks its rows with the positions) and holds it until it has committed, so the next transaction takes positions
//! only after this one is visible: positions are in commit order, without gaps, whatever the
//! number of processes. A reader that saw position N has therefore seen every position below N.
//! On SQLite, which has one writer at a time, the same statements give the same order.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::opportunity::sqlite_instant;
use super::prepared::{PgInsertEvents, TakePositions};
use super::schema::{postgres as pg, sqlite as lite};
use super::{DbConn, DbError};
use crate::domain::opportunity::{Opportunity, VisibilityMode, format_instant};

/// What happened to the opportunity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Updated,
    Archived,
    Restored,
}

impl EventKind {
    /// The wire value of `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Archived => "archived",
            Self::Restored => "restored",
        }
    }
}

/// An event to append with its change.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: EventKind,
    pub occurred_at: DateTime<Utc>,
    pub actor: Uuid,
    /// Readable from other workspaces after the change or before it.
    pub visible_elsewhere: bool,
    pub workspace_id: Uuid,
    pub opportunity_id: Uuid,
    pub stage: &'static str,
    pub pipeline_type: &'static str,
    pub owner_user_id: Uuid,
    /// The opportunity after the change, as answered.
    pub opportunity: String,
}

impl NewEvent {
    /// The event of a change from `before` (none for a create) to `after`, made by `actor`;
    /// `json` is `after` as answered.
    pub fn new(kind: EventKind, before: Option<&Opportunity>, after: &Opportunity, actor: Uuid, json: String) -> Self {
        let elsewhere = |o: &Opportunity| o.visibility_mode != VisibilityMode::WorkspaceLocal;
        Self {
            kind,
            occurred_at: after.updated_at,
            actor,
            visible_elsewhere: elsewhere(after) || before.is_some_and(elsewhere),
            workspace_id: after.workspace_id,
            opportunity_id: after.id,
            stage: after.stage.as_str(),
            pipeline_type: after.pipeline_type.as_str(),
            owner_user_id: after.owner_user_id,
            opportunity: json,
        }
    }

    /// The event of a create.
    pub fn created(o: &Opportunity, json: String) -> Self {
        Self::new(EventKind::Created, None, o, o.created_by, json)
    }
}

#[derive(Insertable)]
#[diesel(table_name = lite::opportunity_events)]
struct SqliteEventRow {
    position: i64,
    kind: &'static str,
    occurred_at: String,
    workspace_id: String,
    actor: String,
    opportunity_id: String,
    visible_elsewhere: bool,
    stage: &'static str,
    pipeline_type: &'static str,
    owner_user_id: String,
    opportunity: String,
}

/// Appends events in the caller's transaction; call it late before COMMIT (it takes the
/// position lock, held until the transaction ends). Returns the last position handed out.
pub fn append(conn: &mut DbConn<'_>, events: Vec<NewEvent>) -> QueryResult<i64> {
    if events.is_empty() {
        return Ok(0);
    }
    let n = events.len() as i64;
    let position;
    match conn {
        DbConn::Postgres(c) => {
            let last: i64 = TakePositions(n).get_result(*c)?;
            position = last;
            // One statement, however many events: it runs under the position lock, where
            // each round trip holds up every other writer.
            PgInsertEvents::new(last - n + 1, events).execute(*c)?;
        }
        DbConn::Sqlite(c) => {
            let last: i64 = TakePositions(n).get_result(*c)?;
            let first = last - n + 1;
            position = last;
            let rows: Vec<SqliteEventRow> = events
                .into_iter()
                .enumerate()
                .map(|(i, e)| SqliteEventRow {
                    position: first + i as i64,
                    kind: e.kind.as_str(),
                    occurred_at: sqlite_instant(&e.occurred_at),
                    workspace_id: e.workspace_id.to_string(),
                    actor: e.actor.to_string(),
                    opportunity_id: e.opportunity_id.to_string(),
                    visible_elsewhere: e.visible_elsewhere,
                    stage: e.stage,
                    pipeline_type: e.pipeline_type,
                    owner_user_id: e.owner_user_id.to_string(),
                    opportunity: e.opportunity,
                })
                .collect();
            insert_in_chunks!(*c, lite::opportunity_events::table, rows)?;
        }
    }
    Ok(position)
}

/// A stored event, ready to send.
#[derive(Debug)]
pub struct Event {
    pub position: i64,
    pub workspace_id: Uuid,
    pub visible_elsewhere: bool,
    pub stage: String,
    pub pipeline_type: String,
    pub owner_user_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    /// The whole event object of §9.
    pub json: Box<RawValue>,
}

/// The wire form of an event id: the position, zero-padded so that ids also sort as text.
pub fn event_id(position: i64) -> String {
    format!("{position:020}")
}

/// Reads an event id; `None` for anything this service cannot have issued in that form.
pub fn parse_event_id(text: &str) -> Option<i64> {
    if text.len() != 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventJson<'a> {
    event_id: String,
    #[serde(rename = "type")]
    kind: &'a str,
    occurred_at: String,
    workspace_id: Uuid,
    actor: Uuid,
    opportunity: &'a RawValue,
}

#[allow(clippy::too_many_arguments)]
fn build_event(
    position: i64,
    kind: &str,
    occurred_at: DateTime<Utc>,
    workspace_id: Uuid,
    actor: Uuid,
    visible_elsewhere: bool,
    stage: String,
    pipeline_type: String,
    owner_user_id: Uuid,
    opportunity: &str,
) -> Result<Event, DbError> {
    let raw: &RawValue = serde_json::from_str(opportunity).map_err(|_| corrupt("opportunity of event", position))?;
    let json = serde_json::value::to_raw_value(&EventJson {
        event_id: event_id(position),
        kind,
        occurred_at: format_instant(&occurred_at),
        workspace_id,
        actor,
        opportunity: raw,
    })
    .expect("an event serializes");
    Ok(Event { position, workspace_id, visible_elsewhere, stage, pipeline_type, owner_user_id, occurred_at, json })
}

fn corrupt(what: &str, position: i64) -> DbError {
    DbError::Query(DieselError::DeserializationError(format!("stored {what} {position} is not valid").into()))
}

type PgEventTuple = (i64, String, DateTime<Utc>, Uuid, Uuid, bool, String, String, Uuid, String);
type SqliteEventTuple = (i64, String, String, String, String, bool, String, String, String, String);

/// Who reads: the workspace, and whether events readable from elsewhere count too
/// (`include: "visible"`). `None` reads every event (the feed's own poller).
#[derive(Debug, Clone, Copy)]
pub struct Reader {
    pub workspace: Uuid,
    pub visible: bool,
}

/// The feed's head and purge mark, with a page of events after `since` (up to `limit`, all at
/// or below the head), read in one snapshot.
#[derive(Debug)]
pub struct Page {
    /// The last position handed out.
    pub head: i64,
    /// Events at or below this may be gone.
    pub purged_through: i64,
    pub events: Vec<Event>,
}

/// Reads a page of events after `since` (all of them from the oldest kept when `None`) for
/// `reader` (every event when `None`).
pub fn page(conn: DbConn<'_>, since: Option<i64>, reader: Option<Reader>, limit: i64) -> Result<Page, DbError> {
    match conn {
        DbConn::Postgres(c) => c
            .build_transaction()
            .repeatable_read()
            .read_only()
            .run(|c| {
                use pg::opportunity_event_feed as feed;
                use pg::opportunity_events as e;
                let (head, purged_through): (i64, i64) =
                    feed::table.find(1i16).select((feed::last_position, feed::purged_through)).first(c)?;
                let mut query = e::table
                    .filter(e::position.gt(since.unwrap_or(0)))
                    .filter(e::position.le(head))
                    .order(e::position)
                    .limit(limit)
                    .select((
                        e::position,
                        e::kind,
                        e::occurred_at,
                        e::workspace_id,
                        e::actor,
                        e::visible_elsewhere,
                        e::stage,
                        e::pipeline_type,
                        e::owner_user_id,
                        e::opportunity,
                    ))
                    .into_boxed();
                if let Some(r) = reader {
                    query = if r.visible {
                        query.filter(e::workspace_id.eq(r.workspace).or(e::visible_elsewhere.eq(true)))
                    } else {
                        query.filter(e::workspace_id.eq(r.workspace))
                    };
                }
                let rows: Vec<PgEventTuple> = query.load(c)?;
                Ok::<_, DieselError>((head, purged_through, rows))
            })
            .map_err(DbError::classify)
            .and_then(|(head, purged_through, rows)| {
                let events = rows
                    .into_iter()
                    .map(|(p, k, at, ws, actor, elsewhere, stage, pipeline, owner, o)| {
                        build_event(p, &k, at, ws, actor, elsewhere, stage, pipeline, owner, &o)
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Page { head, purged_through, events })
            }),
        DbConn::Sqlite(c) => c
            .transaction(|c| {
                use lite::opportunity_event_feed as feed;
                use lite::opportunity_events as e;
                let (head, purged_through): (i64, i64) =
                    feed::table.find(1).select((feed::last_position, feed::purged_through)).first(c)?;
                let mut query = e::table
                    .filter(e::position.gt(since.unwrap_or(0)))
                    .filter(e::position.le(head))
                    .order(e::position)
                    .limit(limit)
                    .select((
                        e::position,
                        e::kind,
                        e::occurred_at,
                        e::workspace_id,
                        e::actor,
                        e::visible_elsewhere,
                        e::stage,
                        e::pipeline_type,
                        e::owner_user_id,
                        e::opportunity,
                    ))
                    .into_boxed();
                if let Some(r) = reader {
                    let ws = r.workspace.to_string();
                    query = if r.visible {
                        query.filter(e::workspace_id.eq(ws).or(e::visible_elsewhere.eq(true)))
                    } else {
                        query.filter(e::workspace_id.eq(ws))
                    };
                }
                let rows: Vec<SqliteEventTuple> = query.load(c)?;
                Ok::<_, DieselError>((head, purged_through, rows))
            })
            .map_err(DbError::classify)
            .and_then(|(head, purged_through, rows)| {
                let uuid = |p: i64, v: &str| Uuid::try_parse(v).map_err(|_| corrupt("event", p));
                let events = rows
                    .into_iter()
                    .map(|(p, k, at, ws, actor, elsewhere, stage, pipeline, owner, o)| {
                        let at = DateTime::parse_from_rfc3339(&at)
                            .map_err(|_| corrupt("event time", p))?
                            .with_timezone(&Utc);
                        build_event(
                            p,
                            &k,
                            at,
                            uuid(p, &ws)?,
                            uuid(p, &actor)?,
                            elsewhere,
                            stage,
                            pipeline,
                            uuid(p, &owner)?,
                            &o,
                        )
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Page { head, purged_through, events })
            }),
    }
}

/// The feed's head: the last position handed out.
pub fn head(conn: DbConn<'_>) -> Result<i64, DbError> {
    match conn {
        DbConn::Postgres(c) => {
            pg::opportunity_event_feed::table.find(1i16).select(pg::opportunity_event_feed::last_position).first(c)
        }
        DbConn::Sqlite(c) => {
            lite::opportunity_event_feed::table.find(1).select(lite::opportunity_event_feed::last_position).first(c)
        }
    }
    .map_err(DbError::classify)
}

/// Purges the events older than `cutoff`: every event before the first one that is not, so
/// that each kept event stays readable in order. Where the purge ends is decided by one
/// statement (one snapshot): an event committed meanwhile is after it, and kept. The purge mark
/// moves first (in its own commit), so that a reader never takes a purged range for an empty
/// one. Returns how many.
pub fn purge(conn: DbConn<'_>, cutoff: DateTime<Utc>) -> Result<usize, DbError> {
    #[derive(QueryableByName)]
    struct Through {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
        through: Option<i64>,
    }
    const THROUGH: &str = "SELECT COALESCE((SELECT MIN(position) FROM opportunity_events WHERE occurred_at >= {cutoff}) - 1, \
                           (SELECT MAX(position) FROM opportunity_events)) AS through";
    match conn {
        DbConn::Postgres(c) => {
            use pg::opportunity_event_feed as feed;
            use pg::opportunity_events as e;
            let Through { through } = diesel::sql_query(THROUGH.replace("{cutoff}", "$1"))
                .bind::<diesel::sql_types::Timestamptz, _>(cutoff)
                .get_result(c)
                .map_err(DbError::classify)?;
            let Some(through) = through else { return Ok(0) };
            diesel::update(feed::table.find(1i16))
                .set(
                    feed::purged_through.eq(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
                        "GREATEST(purged_through, {through})"
                    ))),
                )
                .execute(c)
                .map_err(DbError::classify)?;
            diesel::delete(e::table.filter(e::position.le(through))).execute(c).map_err(DbError::classify)
        }
        DbConn::Sqlite(c) => {
            use lite::opportunity_event_feed as feed;
            use lite::opportunity_events as e;
            let Through { through } = diesel::sql_query(THROUGH.replace("{cutoff}", "?"))
                .bind::<diesel::sql_types::Text, _>(sqlite_instant(&cutoff))
                .get_result(c)
                .map_err(DbError::classify)?;
            let Some(through) = through else { return Ok(0) };
            diesel::update(feed::table.find(1))
                .set(
                    feed::purged_through
                        .eq(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!("MAX(purged_through, {through})"))),
                )
                .execute(c)
                .map_err(DbError::classify)?;
            diesel::delete(e::table.filter(e::position.le(through))).execute(c).map_err(DbError::classify)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_fixed_width_and_parse_back() {
        assert_eq!(event_id(42), "00000000000000000042");
        assert_eq!(parse_event_id(&event_id(42)), Some(42));
        assert_eq!(parse_event_id(&event_id(0)), Some(0));
        assert!(event_id(9) < event_id(10), "ids sort as text too");
        for bad in
            ["", "42", "0000000000000000004x", "-0000000000000000042", "000000000000000000042", "9".repeat(20).as_str()]
        {
            assert_eq!(parse_event_id(bad), None, "{bad}");
        }
    }
}

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

use super::prepared::{PgAppendEvents, TakePositions};
use super::schema::{opportunity_event_feed as feed, opportunity_events as e};
use super::types::{Id, Instant, sql};
use super::{DbConn, DbError, in_snapshot};
use crate::domain::opportunity::{Opportunity, VisibilityMode, format_instant};

// On the wire (`type`), the variant's name in lower case.
/// What happened to the opportunity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, schemars::JsonSchema)]
#[schemars(rename_all = "lowercase", inline)]
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

/// An event as SQLite's INSERT takes it (PostgreSQL's takes columns of arrays:
/// [`PgAppendEvents`]).
#[derive(Insertable)]
#[diesel(table_name = e)]
struct EventRow {
    position: i64,
    kind: &'static str,
    occurred_at: Instant,
    workspace_id: Id,
    actor: Id,
    opportunity_id: Id,
    visible_elsewhere: bool,
    stage: &'static str,
    pipeline_type: &'static str,
    owner_user_id: Id,
    opportunity: String,
}

/// Appends events in the caller's transaction; call it late before COMMIT (it takes the
/// position lock, held until the transaction ends). Returns the last position handed out.
pub fn append(conn: &mut DbConn<'_>, events: Vec<NewEvent>) -> QueryResult<i64> {
    if events.is_empty() {
        return Ok(0);
    }
    let n = events.len() as i64;
    match conn {
        // One statement, however many events, takes their positions and inserts them: it runs
        // under the position lock, where each round trip holds up every other writer.
        DbConn::Postgres(c) => PgAppendEvents::new(events).get_result(*c),
        DbConn::Sqlite(c) => {
            let last: i64 = TakePositions(n).get_result(*c)?;
            let first = last - n + 1;
            let rows: Vec<EventRow> = events
                .into_iter()
                .zip(first..)
                .map(|(e, position)| EventRow {
                    position,
                    kind: e.kind.as_str(),
                    occurred_at: Instant(e.occurred_at),
                    workspace_id: Id(e.workspace_id),
                    actor: Id(e.actor),
                    opportunity_id: Id(e.opportunity_id),
                    visible_elsewhere: e.visible_elsewhere,
                    stage: e.stage,
                    pipeline_type: e.pipeline_type,
                    owner_user_id: Id(e.owner_user_id),
                    opportunity: e.opportunity,
                })
                .collect();
            insert_in_chunks!(*c, e::table, rows)?;
            Ok(last)
        }
    }
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

/// One event of the feed, as stored and answered.
#[derive(Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(
    deny_unknown_fields,
    description = "One committed change: a create, an update that changed something, an archive or a restore. `workspaceId` is the opportunity's own workspace, `actor` the caller who made the change, `opportunity` the opportunity after it."
)]
pub struct OpportunityEvent<'a> {
    #[schemars(with = "crate::schema::EventId")]
    pub event_id: String,
    #[serde(rename = "type")]
    #[schemars(with = "EventKind")]
    pub kind: &'a str,
    #[schemars(with = "crate::schema::DateTimeUtc")]
    pub occurred_at: String,
    #[schemars(with = "crate::schema::UuidLower")]
    pub workspace_id: Uuid,
    #[schemars(with = "crate::schema::UuidLower")]
    pub actor: Uuid,
    /// The opportunity after the change.
    #[schemars(with = "Opportunity")]
    pub opportunity: &'a RawValue,
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
    let json = serde_json::value::to_raw_value(&OpportunityEvent {
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

type EventTuple = (i64, String, Instant, Id, Id, bool, String, String, Id, String);

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

/// [`page`], holding only as many of the `limit` events as fit in `max_bytes` of opportunity
/// JSON (always the first one), in one statement: the sizes add up in a window over the page's
/// rows, and the JSON of the rows past the budget is never read (PostgreSQL takes a size from
/// its TOAST pointer), so that a page of large opportunities is neither read nor answered whole.
/// The feed's own poller and the replays keep [`page`], which diesel keeps prepared: this
/// statement, parsed at each call, cost `bench/feed`'s drain 6–8%.
pub fn page_within(
    conn: DbConn<'_>,
    since: Option<i64>,
    reader: Option<Reader>,
    limit: i64,
    max_bytes: i64,
) -> Result<Page, DbError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        position: i64,
        #[diesel(sql_type = diesel::sql_types::Text)]
        kind: String,
        #[diesel(sql_type = sql::Instant)]
        occurred_at: Instant,
        #[diesel(sql_type = sql::Id)]
        workspace_id: Id,
        #[diesel(sql_type = sql::Id)]
        actor: Id,
        #[diesel(sql_type = diesel::sql_types::Bool)]
        visible_elsewhere: bool,
        #[diesel(sql_type = diesel::sql_types::Text)]
        stage: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        pipeline_type: String,
        #[diesel(sql_type = sql::Id)]
        owner_user_id: Id,
        #[diesel(sql_type = diesel::sql_types::Text)]
        opportunity: String,
    }
    let (size, p) = match conn {
        DbConn::Postgres(_) => ("CAST(octet_length(opportunity) AS bigint)", ["$1", "$2", "$3", "$4"]),
        // Numbered: the workspace's comes before the limit's in the text, not in the binds.
        DbConn::Sqlite(_) => ("octet_length(opportunity)", ["?1", "?2", "?3", "?4"]),
    };
    let whose = match reader {
        None => String::new(),
        Some(Reader { visible: true, .. }) => format!(" AND (workspace_id = {} OR visible_elsewhere)", p[3]),
        Some(Reader { visible: false, .. }) => format!(" AND workspace_id = {}", p[3]),
    };
    let columns = "position, kind, occurred_at, workspace_id, actor, visible_elsewhere, stage, pipeline_type, \
                   owner_user_id, opportunity";
    let statement = format!(
        "SELECT {columns} FROM (SELECT {columns}, {size} AS size, SUM({size}) OVER (ORDER BY position) AS upto \
         FROM opportunity_events WHERE position > {p0} AND position <= {p1}{whose} ORDER BY position LIMIT {p2}) page \
         WHERE upto <= {max_bytes} OR upto = size ORDER BY position",
        p0 = p[0],
        p1 = p[1],
        p2 = p[2],
    );
    let (head, purged_through, rows) = in_snapshot(conn, |conn| {
        on_either!(conn, c => {
            let (head, purged_through): (i64, i64) =
                feed::table.find(1).select((feed::last_position, feed::purged_through)).first(c)?;
            let query = diesel::sql_query(statement.as_str())
                .into_boxed()
                .bind::<diesel::sql_types::BigInt, _>(since.unwrap_or(0))
                .bind::<diesel::sql_types::BigInt, _>(head)
                .bind::<diesel::sql_types::BigInt, _>(limit);
            let query = match reader {
                Some(r) => query.bind::<sql::Id, _>(Id(r.workspace)),
                None => query,
            };
            let rows: Vec<Row> = query.load(c)?;
            let rows: Vec<EventTuple> = rows
                .into_iter()
                .map(|r| {
                    (r.position, r.kind, r.occurred_at, r.workspace_id, r.actor, r.visible_elsewhere, r.stage,
                     r.pipeline_type, r.owner_user_id, r.opportunity)
                })
                .collect();
            Ok((head, purged_through, rows))
        })
    })
    .map_err(DbError::classify)?;
    events_of(head, purged_through, rows)
}

/// Reads a page of events after `since` (all of them from the oldest kept when `None`) for
/// `reader` (every event when `None`).
pub fn page(conn: DbConn<'_>, since: Option<i64>, reader: Option<Reader>, limit: i64) -> Result<Page, DbError> {
    let (head, purged_through, rows) = in_snapshot(conn, |conn| {
        on_either!(conn, c => {
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
                let ws = Id(r.workspace);
                query = if r.visible {
                    query.filter(e::workspace_id.eq(ws).or(e::visible_elsewhere.eq(true)))
                } else {
                    query.filter(e::workspace_id.eq(ws))
                };
            }
            let rows: Vec<EventTuple> = query.load(c)?;
            Ok((head, purged_through, rows))
        })
    })
    .map_err(DbError::classify)?;
    events_of(head, purged_through, rows)
}

/// The page of `rows` read with the feed's `head` and purge mark.
fn events_of(head: i64, purged_through: i64, rows: Vec<EventTuple>) -> Result<Page, DbError> {
    let events = rows
        .into_iter()
        .map(|(p, k, at, ws, actor, elsewhere, stage, pipeline, owner, o)| {
            build_event(p, &k, at.0, ws.0, actor.0, elsewhere, stage, pipeline, owner.0, &o)
        })
        .collect::<Result<_, _>>()?;
    Ok(Page { head, purged_through, events })
}

/// The feed's head: the last position handed out.
pub fn head(conn: DbConn<'_>) -> Result<i64, DbError> {
    on_either!(conn, c => feed::table.find(1).select(feed::last_position).first(c)).map_err(DbError::classify)
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
    let placeholder = match conn {
        DbConn::Postgres(_) => "$1",
        DbConn::Sqlite(_) => "?",
    };
    on_either!(conn, c => {
        let Through { through } = diesel::sql_query(THROUGH.replace("{cutoff}", placeholder))
            .bind::<sql::Instant, _>(Instant(cutoff))
            .get_result(c)?;
        let Some(through) = through else { return Ok(0) };
        diesel::update(feed::table.find(1).filter(feed::purged_through.lt(through)))
            .set(feed::purged_through.eq(through))
            .execute(c)?;
        diesel::delete(e::table.filter(e::position.le(through))).execute(c)
    })
    .map_err(DbError::classify)
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

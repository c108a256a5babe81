-- The change feed of CONTRACT.md §9: one event per committed change, written in the change's own
-- transaction. Positions are handed out from the single row of opportunity_event_feed, whose
-- row lock each writing transaction takes just before it commits: a transaction that holds
-- positions commits before the next one can take any, so positions are in commit order and a
-- reader that has seen position N has seen every position below it (no gaps, no repeats).
CREATE TABLE opportunity_events (
    position          bigint PRIMARY KEY,
    kind              text NOT NULL CHECK (kind IN ('created', 'updated', 'archived', 'restored')),
    occurred_at       timestamptz NOT NULL,
    workspace_id      uuid NOT NULL,
    actor             uuid NOT NULL,
    opportunity_id    uuid NOT NULL,
    -- Readable from other workspaces after the change or before it (shared or global).
    visible_elsewhere boolean NOT NULL,
    stage             text NOT NULL,
    pipeline_type     text NOT NULL,
    owner_user_id     uuid NOT NULL,
    -- The opportunity after the change, as the API answers it (JSON).
    opportunity       text NOT NULL
);

CREATE INDEX opportunity_events_ws_position_idx ON opportunity_events (workspace_id, position);
CREATE INDEX opportunity_events_elsewhere_position_idx ON opportunity_events (position) WHERE visible_elsewhere;

CREATE TABLE opportunity_event_feed (
    id             smallint PRIMARY KEY CHECK (id = 1),
    -- The last position handed out (committed).
    last_position  bigint NOT NULL,
    -- Events up to here may have been purged (EVENT_RETENTION).
    purged_through bigint NOT NULL
);

INSERT INTO opportunity_event_feed (id, last_position, purged_through) VALUES (1, 0, 0);

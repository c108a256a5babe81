-- The change feed of CONTRACT.md §9: one event per committed change, written in the change's own
-- transaction (SQLite has one writer at a time, so positions are in commit order).
CREATE TABLE opportunity_events (
    position          BIGINT PRIMARY KEY NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('created', 'updated', 'archived', 'restored')),
    occurred_at       TEXT NOT NULL,
    workspace_id      TEXT NOT NULL,
    actor             TEXT NOT NULL,
    opportunity_id    TEXT NOT NULL,
    visible_elsewhere BOOLEAN NOT NULL,
    stage             TEXT NOT NULL,
    pipeline_type     TEXT NOT NULL,
    owner_user_id     TEXT NOT NULL,
    opportunity       TEXT NOT NULL
);

CREATE INDEX opportunity_events_ws_position_idx ON opportunity_events (workspace_id, position);
CREATE INDEX opportunity_events_elsewhere_position_idx ON opportunity_events (position) WHERE visible_elsewhere;

CREATE TABLE opportunity_event_feed (
    id             INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    last_position  BIGINT NOT NULL,
    purged_through BIGINT NOT NULL
);

INSERT INTO opportunity_event_feed (id, last_position, purged_through) VALUES (1, 0, 0);

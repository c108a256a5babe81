-- The lifecycle of CONTRACT.md §8: archiving (an instant as TEXT, like the other instants), and
-- indexes for every `orderBy` of opportunity.list within a workspace (ties broken by id).
ALTER TABLE opportunities ADD COLUMN archived_at TEXT;
-- The feed position of the last change of each ordering value that can change (0: none since
-- the create). A list cursor remembers the feed's head at its first page; later pages leave out
-- what changed its ordering value since, so that paging never returns an opportunity twice.
ALTER TABLE opportunities ADD COLUMN updated_pos BIGINT NOT NULL DEFAULT 0;
ALTER TABLE opportunities ADD COLUMN close_pos BIGINT NOT NULL DEFAULT 0;
ALTER TABLE opportunities ADD COLUMN value_pos BIGINT NOT NULL DEFAULT 0;

CREATE INDEX opportunities_ws_created_id_idx ON opportunities (workspace_id, created_at, id);
CREATE INDEX opportunities_ws_updated_id_idx ON opportunities (workspace_id, updated_at, id);
CREATE INDEX opportunities_ws_close_id_idx ON opportunities (workspace_id, expected_close_date, id);
CREATE INDEX opportunities_ws_value_id_idx ON opportunities (workspace_id, estimated_value_cents, id);
CREATE INDEX opportunities_visible_created_id_idx ON opportunities (created_at, id)
    WHERE visibility_mode IN ('shared', 'global');
DROP INDEX opportunities_workspace_created_idx;

CREATE INDEX opportunities_workspace_created_idx ON opportunities (workspace_id, created_at);
DROP INDEX opportunities_visible_created_id_idx;
DROP INDEX opportunities_ws_value_id_idx;
DROP INDEX opportunities_ws_close_id_idx;
DROP INDEX opportunities_ws_updated_id_idx;
DROP INDEX opportunities_ws_created_id_idx;
ALTER TABLE opportunities DROP COLUMN archived_at;

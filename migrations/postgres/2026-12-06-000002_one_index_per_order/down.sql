CREATE INDEX opportunities_ws_close_desc_id_idx ON opportunities (workspace_id, expected_close_date DESC NULLS LAST, id DESC);
CREATE INDEX opportunities_ws_value_desc_id_idx ON opportunities (workspace_id, estimated_value_cents DESC NULLS LAST, id DESC);

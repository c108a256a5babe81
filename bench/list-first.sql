SELECT * FROM opportunities WHERE workspace_id = $1 AND stage IN ($2, $3) AND archived_at IS NULL AND expected_close_date IS NOT NULL ORDER BY expected_close_date DESC, id DESC LIMIT 51

SELECT * FROM opportunities WHERE workspace_id = $1 AND stage IN ($2, $3) AND archived_at IS NULL ORDER BY expected_close_date DESC NULLS LAST, id DESC LIMIT 51

-- One index per ordering value of `opportunity.list`, read in both directions. The descending
-- indexes of `expected_close_date` and `estimated_value_cents` served `ORDER BY … DESC NULLS
-- LAST`, which PostgreSQL cannot read from an ascending index. The list no longer asks for it:
-- each of its statements holds either rows with a value or rows without (src/db/list.rs,
-- Statement::build), so `ORDER BY … DESC` reads the ascending index backwards. Each of these
-- indexes cost every create and every update one more index entry: dropping them made updates of
-- scattered opportunities at 32 connections 16-27% faster (`bench/run`'s table of 1,100,000
-- rows, alternating runs).
DROP INDEX IF EXISTS opportunities_ws_close_desc_id_idx;
DROP INDEX IF EXISTS opportunities_ws_value_desc_id_idx;

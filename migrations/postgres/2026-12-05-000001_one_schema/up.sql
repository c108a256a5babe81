-- One schema on both backends (src/db/schema.rs): the columns SQLite stores in a portable type
-- get it here too, under the same name. Money becomes integer cents, exactly (numeric(15,2)
-- times 100 is a whole number); the probability and the feed row's id become integer. UUIDs,
-- instants and lists keep PostgreSQL's native types (src/db/types.rs maps them).
ALTER TABLE opportunities DROP CONSTRAINT opportunities_estimated_value_check;
ALTER TABLE opportunities RENAME COLUMN estimated_value TO estimated_value_cents;
ALTER TABLE opportunities ALTER COLUMN estimated_value_cents TYPE bigint USING (estimated_value_cents * 100)::bigint;
ALTER TABLE opportunities ADD CONSTRAINT opportunities_estimated_value_cents_check
    CHECK (estimated_value_cents BETWEEN 0 AND 100000000000000);
ALTER TABLE opportunities ALTER COLUMN probability TYPE integer;
ALTER TABLE opportunity_event_feed ALTER COLUMN id TYPE integer;

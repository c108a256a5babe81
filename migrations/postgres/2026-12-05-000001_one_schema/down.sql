ALTER TABLE opportunity_event_feed ALTER COLUMN id TYPE smallint;
ALTER TABLE opportunities ALTER COLUMN probability TYPE smallint;
ALTER TABLE opportunities DROP CONSTRAINT opportunities_estimated_value_cents_check;
ALTER TABLE opportunities ALTER COLUMN estimated_value_cents TYPE numeric(15, 2) USING estimated_value_cents / 100.0;
ALTER TABLE opportunities RENAME COLUMN estimated_value_cents TO estimated_value;
ALTER TABLE opportunities ADD CONSTRAINT opportunities_estimated_value_check
    CHECK (estimated_value BETWEEN 0 AND 1000000000000);

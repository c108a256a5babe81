-- bench/run's seed on PostgreSQL: :rows opportunities in the workspace :'ws' (the one the
-- benchmark's token acts in) and :others in 20 other workspaces, straight into the table the
-- service migrated, with values shaped like the service's rows. Row i has the id
-- md5('opportunity-' || i) as a version-4-like UUID, so that pgbench can name a random seeded row
-- (bench/run's get limit). Run with psql -v rows=N -v others=M -v ws=UUID -v user=UUID.
\set ON_ERROR_STOP on
SET synchronous_commit = off;
SET maintenance_work_mem = '256MB';
BEGIN;
-- The secondary indexes are dropped for the insert and built again afterwards from their own
-- definitions (one sort each instead of a million random insertions).
CREATE TEMP TABLE seed_indexes ON COMMIT DROP AS
    SELECT indexname, indexdef FROM pg_indexes
    WHERE schemaname = current_schema() AND tablename = 'opportunities' AND indexname <> 'opportunities_pkey';
DO $$ DECLARE r record; BEGIN
    FOR r IN SELECT indexname FROM seed_indexes LOOP EXECUTE format('DROP INDEX %I', r.indexname); END LOOP;
END $$;
INSERT INTO opportunities (
    id, workspace_id, customer_id, primary_contact_id, site_id, title, stage, pipeline_type, source,
    estimated_value_cents, expected_close_date, probability, solution_families, scope_summary,
    competitor_notes, win_loss_reason, next_step_description, next_step_date, bid_due_date,
    budget_confirmed, priority, lost_reason_category, technical_requirements, owner_user_id,
    visibility_mode, created_by, created_at, updated_at, version)
SELECT
    overlay(overlay(md5('opportunity-' || i) placing '4' from 13) placing '8' from 17)::uuid,
    CASE WHEN i <= :rows THEN :'ws'::uuid
         ELSE ('00000000-0000-4000-8000-' || lpad(to_hex(i % 20), 12, '0'))::uuid END,
    gen_random_uuid(),
    CASE WHEN i % 2 = 0 THEN gen_random_uuid() END,
    CASE WHEN i % 3 = 0 THEN gen_random_uuid() END,
    (ARRAY['Chiller retrofit, Building C', 'Access control, east wing', 'Fire alarm upgrade – Terminal 2',
           'BMS integration for the new lab', 'Service agreement HVAC controls 2027',
           'Kältezentrale Erweiterung Halle 4', 'CCTV and intrusion, distribution centre',
           'Smoke extraction, underground car park', 'VAV box replacement, floors 3-9',
           'Badge readers for the data hall'])[1 + i % 10] || ' #seed-' || i,
    stage,
    (ARRAY['new_construction', 'retrofit', 'service_agreement', 'expansion', 'other'])[1 + (i / 7) % 5],
    (ARRAY['referral', 'website', 'cold_call', 'existing_customer', 'partner', 'trade_show',
           'portal_request', 'other', NULL])[1 + (i / 3) % 9],
    CASE WHEN i % 10 < 7 THEN (random() * 500000000)::bigint END,
    CASE WHEN i % 10 <> 9 THEN timestamptz '2026-01-01 00:00:00+00' + random() * interval '1095 days' END,
    CASE stage WHEN 'won' THEN 100 WHEN 'lost' THEN 0 ELSE CASE WHEN i % 2 = 1 THEN (i % 101) END END,
    CASE (i / 11) % 4 WHEN 1 THEN ARRAY['HVAC controls'] WHEN 2 THEN ARRAY['Access control', 'CCTV'] ELSE '{}'::text[] END,
    CASE WHEN i % 2 = 0 THEN 'Replace the pneumatic controls of three air handlers with DDC, integrate the chillers into the existing BMS over BACnet/IP, and commission the new sequences before the cooling season.' END,
    CASE WHEN i % 5 = 0 THEN 'Incumbent integrator, strong on price' END,
    NULL,
    CASE WHEN i % 5 = 1 THEN 'Site survey with the facility manager' END,
    CASE WHEN i % 5 = 1 THEN timestamptz '2026-12-01 00:00:00+00' + random() * interval '365 days' END,
    NULL,
    i % 3 = 0,
    (ARRAY['low', 'medium', 'high', 'urgent', NULL])[1 + (i / 13) % 5],
    CASE WHEN stage = 'lost' THEN (ARRAY['price', 'timing', 'competitor', 'scope_mismatch', 'no_decision',
                                         'relationship', 'other'])[1 + (i / 8) % 7] END,
    NULL,
    :'user'::uuid,
    CASE WHEN i % 10 = 3 THEN 'shared' ELSE 'workspace_local' END,
    :'user'::uuid,
    created,
    created,
    1
FROM (
    SELECT i,
           (ARRAY['lead', 'lead', 'qualified', 'survey', 'proposal', 'negotiation', 'won', 'lost'])[1 + (i::bigint * 7919) % 8] AS stage,
           date_trunc('milliseconds', now()) - random() * interval '700 days' AS created
    FROM generate_series(1, :rows + :others) AS i
) AS g;
DO $$ DECLARE r record; BEGIN
    FOR r IN SELECT indexdef FROM seed_indexes LOOP EXECUTE r.indexdef; END LOOP;
END $$;
COMMIT;
ANALYZE opportunities;

-- bench/run's seed on SQLite: @ROWS@ opportunities in the workspace @WS@ (the one the
-- benchmark's token acts in) and @OTHERS@ in 20 other workspaces, straight into the table the
-- service migrated, in the service's storage formats: UUIDs as lowercase hyphenated TEXT (row i's
-- id is a bijection of i shaped as a version-4 UUID), instants as 'YYYY-MM-DDTHH:MM:SS.ffffffZ',
-- money as INTEGER cents, solution_families a JSON array. bench/run replaces the @…@ names, and
-- drops the secondary indexes before this and builds them again after it (from sqlite_master).
-- Rows go in in id order, so that the primary key's index is appended to, not scattered.
PRAGMA synchronous = OFF;
PRAGMA cache_size = -262144;
PRAGMA temp_store = MEMORY;
BEGIN;
WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < @ROWS@ + @OTHERS@),
g AS (
    SELECT i,
           CASE (i * 7919) % 8 WHEN 0 THEN 'lead' WHEN 1 THEN 'lead' WHEN 2 THEN 'qualified' WHEN 3 THEN 'survey'
               WHEN 4 THEN 'proposal' WHEN 5 THEN 'negotiation' WHEN 6 THEN 'won' ELSE 'lost' END AS stage,
           1733011200 + (i * 16807) % 63072000 AS created_s,
           1767225600 + (i * 48271) % 94608000 AS close_s
    FROM seq
)
INSERT INTO opportunities (
    id, workspace_id, customer_id, primary_contact_id, site_id, title, stage, pipeline_type, source,
    estimated_value_cents, expected_close_date, probability, solution_families, scope_summary,
    competitor_notes, win_loss_reason, next_step_description, next_step_date, bid_due_date,
    budget_confirmed, priority, lost_reason_category, technical_requirements, owner_user_id,
    visibility_mode, created_by, created_at, updated_at, version)
SELECT
    printf('%08x-%04x-4%03x-%04x-%012x', (i * 2654435761) % 4294967296, (i * 40503) % 65536, (i * 2731) % 4096,
           32768 + (i * 12289) % 16384, (i * 1000003 + 12345) % 281474976710656),
    CASE WHEN i <= @ROWS@ THEN '@WS@' ELSE printf('00000000-0000-4000-8000-%012x', i % 20) END,
    printf('%08x-%04x-4%03x-%04x-%012x', (i * 2246822519) % 4294967296, (i * 52711) % 65536, (i * 977) % 4096,
           32768 + (i * 7411) % 16384, (i * 999983 + 777) % 281474976710656),
    CASE WHEN i % 2 = 0 THEN printf('%08x-%04x-4%03x-%04x-%012x', (i * 3266489917) % 4294967296, (i * 911) % 65536,
           (i * 3) % 4096, 32768 + (i * 5) % 16384, (i * 99991) % 281474976710656) END,
    NULL,
    CASE i % 10 WHEN 0 THEN 'Chiller retrofit, Building C' WHEN 1 THEN 'Access control, east wing'
        WHEN 2 THEN 'Fire alarm upgrade – Terminal 2' WHEN 3 THEN 'BMS integration for the new lab'
        WHEN 4 THEN 'Service agreement HVAC controls 2027' WHEN 5 THEN 'Kältezentrale Erweiterung Halle 4'
        WHEN 6 THEN 'CCTV and intrusion, distribution centre' WHEN 7 THEN 'Smoke extraction, underground car park'
        WHEN 8 THEN 'VAV box replacement, floors 3-9' ELSE 'Badge readers for the data hall' END || ' #seed-' || i,
    stage,
    CASE (i / 7) % 5 WHEN 0 THEN 'new_construction' WHEN 1 THEN 'retrofit' WHEN 2 THEN 'service_agreement'
        WHEN 3 THEN 'expansion' ELSE 'other' END,
    CASE (i / 3) % 9 WHEN 0 THEN 'referral' WHEN 1 THEN 'website' WHEN 2 THEN 'cold_call' WHEN 3 THEN 'existing_customer'
        WHEN 4 THEN 'partner' WHEN 5 THEN 'trade_show' WHEN 6 THEN 'portal_request' WHEN 7 THEN 'other' END,
    CASE WHEN i % 10 < 7 THEN (i * 2147483647) % 500000000 END,
    CASE WHEN i % 10 <> 9 THEN strftime('%Y-%m-%dT%H:%M:%S', close_s, 'unixepoch') || printf('.%06dZ', (i * 7919) % 1000000) END,
    CASE stage WHEN 'won' THEN 100 WHEN 'lost' THEN 0 ELSE CASE WHEN i % 2 = 1 THEN i % 101 END END,
    CASE (i / 11) % 4 WHEN 1 THEN '["HVAC controls"]' WHEN 2 THEN '["Access control","CCTV"]' ELSE '[]' END,
    CASE WHEN i % 2 = 0 THEN 'Replace the pneumatic controls of three air handlers with DDC, integrate the chillers into the existing BMS over BACnet/IP, and commission the new sequences before the cooling season.' END,
    CASE WHEN i % 5 = 0 THEN 'Incumbent integrator, strong on price' END,
    NULL,
    CASE WHEN i % 5 = 1 THEN 'Site survey with the facility manager' END,
    CASE WHEN i % 5 = 1 THEN strftime('%Y-%m-%dT%H:%M:%S', 1764547200 + (i * 13) % 31536000, 'unixepoch') || '.000000Z' END,
    NULL,
    i % 3 = 0,
    CASE (i / 13) % 5 WHEN 0 THEN 'low' WHEN 1 THEN 'medium' WHEN 2 THEN 'high' WHEN 3 THEN 'urgent' END,
    CASE WHEN stage = 'lost' THEN CASE (i / 8) % 7 WHEN 0 THEN 'price' WHEN 1 THEN 'timing' WHEN 2 THEN 'competitor'
        WHEN 3 THEN 'scope_mismatch' WHEN 4 THEN 'no_decision' WHEN 5 THEN 'relationship' ELSE 'other' END END,
    NULL,
    '@USER@',
    CASE WHEN i % 10 = 3 THEN 'shared' ELSE 'workspace_local' END,
    '@USER@',
    strftime('%Y-%m-%dT%H:%M:%S', created_s, 'unixepoch') || printf('.%06dZ', (i * 104729) % 1000000),
    strftime('%Y-%m-%dT%H:%M:%S', created_s, 'unixepoch') || printf('.%06dZ', (i * 104729) % 1000000),
    1
FROM g
ORDER BY 1;
COMMIT;

-- pgbench script for bench/run: the PostgreSQL limit. One opportunity per transaction, with the
-- row shape and field mix that bench/create.lua sends to the service, into the table the service
-- migrated. Run with -M prepared and -D workspace=UUID -D user=UUID.
\set stage random(1, 8)
\set pipeline random(1, 5)
\set src random(1, 13)
\set prio random(1, 7)
\set lost random(1, 10)
\set cents random(0, 500000000)
\set has_value random(1, 10)
\set close_s random(86400, 60480000)
\set prob random(0, 100)
\set fams random(0, 3)
\set fam0 random(1, 8)
\set opt1 random(1, 10)
\set opt2 random(1, 10)
\set opt3 random(1, 10)
\set n random(1, 2000000000)
\set title random(1, 10)
INSERT INTO opportunities (
    id, workspace_id, customer_id, primary_contact_id, site_id, title, stage, pipeline_type, source,
    estimated_value_cents, expected_close_date, probability, solution_families, scope_summary,
    competitor_notes, win_loss_reason, next_step_description, next_step_date, bid_due_date,
    budget_confirmed, priority, lost_reason_category, technical_requirements, owner_user_id,
    visibility_mode, created_by, created_at, updated_at, version)
VALUES (
    gen_random_uuid(),
    :workspace,
    gen_random_uuid(),
    CASE WHEN :opt1 <= 5 THEN gen_random_uuid() END,
    CASE WHEN :opt2 <= 3 THEN gen_random_uuid() END,
    (ARRAY['Chiller retrofit, Building C', 'Access control, east wing', 'Fire alarm upgrade – Terminal 2',
           'BMS integration for the new lab', 'Service agreement HVAC controls 2027',
           'Kältezentrale Erweiterung Halle 4', 'CCTV and intrusion, distribution centre',
           'Smoke extraction, underground car park', 'VAV box replacement, floors 3-9',
           'Badge readers for the data hall'])[:title] || ' #pg-' || :n,
    (ARRAY['lead', 'lead', 'qualified', 'survey', 'proposal', 'negotiation', 'won', 'lost'])[:stage],
    (ARRAY['new_construction', 'retrofit', 'service_agreement', 'expansion', 'other'])[:pipeline],
    (ARRAY['referral', 'website', 'cold_call', 'existing_customer', 'partner', 'trade_show',
           'portal_request', 'other'])[:src],
    CASE WHEN :has_value <= 6 THEN :cents::bigint END,
    CASE WHEN :opt3 <= 6 THEN now() + make_interval(secs => :close_s) END,
    CASE WHEN :opt1 > 5 THEN NULL WHEN :stage = 7 THEN 100 WHEN :stage = 8 THEN 0 ELSE :prob END,
    (ARRAY['HVAC controls', 'Access control', 'Fire alarm', 'CCTV', 'BMS', 'Intrusion', 'Smoke control',
           'Energy metering', 'HVAC controls', 'Access control', 'Fire alarm'])[:fam0::int : :fam0::int + :fams::int - 1],
    CASE WHEN :opt2 <= 5 THEN 'Replace the pneumatic controls of three air handlers with DDC, integrate the chillers into the existing BMS over BACnet/IP, and commission the new sequences before the cooling season.' END,
    CASE WHEN :opt3 <= 2 THEN 'Incumbent integrator, strong on price' END,
    NULL,
    CASE WHEN :opt2 > 6 THEN 'Site survey with the facility manager' END,
    CASE WHEN :opt2 > 6 THEN now() + make_interval(secs => :close_s / 2) END,
    CASE WHEN :opt3 > 7 THEN now() + make_interval(secs => :close_s / 3) END,
    :opt1 % 2 = 0,
    (ARRAY['low', 'medium', 'high', 'urgent'])[:prio],
    CASE WHEN :stage = 8 THEN (ARRAY['price', 'timing', 'competitor', 'scope_mismatch', 'no_decision',
                                     'relationship', 'other'])[:lost] END,
    CASE WHEN :opt3 <= 3 THEN 'BACnet/IP, EN 54 certified devices' END,
    :user,
    CASE WHEN :opt2 <= 8 THEN 'workspace_local' ELSE 'shared' END,
    :user,
    now(),
    now(),
    1);

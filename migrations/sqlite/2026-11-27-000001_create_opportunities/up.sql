-- Opportunities in the sales pipeline, and the idempotency keys of their creates.
-- SQLite has no uuid, timestamptz, numeric or array types: UUIDs are lowercase hyphenated TEXT,
-- instants are TEXT in UTC with six fractional digits ('2026-12-01T07:30:00.000000Z', which sorts
-- in time order), money is INTEGER cents, and solution_families is a JSON array in TEXT.
CREATE TABLE opportunities (
    id                     TEXT PRIMARY KEY NOT NULL,
    workspace_id           TEXT NOT NULL,
    customer_id            TEXT NOT NULL,
    primary_contact_id     TEXT,
    site_id                TEXT,
    title                  TEXT NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    stage                  TEXT NOT NULL CHECK (stage IN ('lead', 'qualified', 'survey', 'proposal', 'negotiation', 'won', 'lost')),
    pipeline_type          TEXT NOT NULL CHECK (pipeline_type IN ('new_construction', 'retrofit', 'service_agreement', 'expansion', 'other')),
    source                 TEXT CHECK (source IN ('referral', 'website', 'cold_call', 'existing_customer', 'partner', 'trade_show', 'portal_request', 'other')),
    estimated_value_cents  BIGINT CHECK (estimated_value_cents BETWEEN 0 AND 100000000000000),
    expected_close_date    TEXT,
    probability            INTEGER CHECK (probability BETWEEN 0 AND 100),
    solution_families      TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(solution_families)),
    scope_summary          TEXT,
    competitor_notes       TEXT,
    win_loss_reason        TEXT,
    next_step_description  TEXT,
    next_step_date         TEXT,
    bid_due_date           TEXT,
    budget_confirmed       BOOLEAN NOT NULL DEFAULT 0,
    priority               TEXT CHECK (priority IN ('low', 'medium', 'high', 'urgent')),
    lost_reason_category   TEXT CHECK (lost_reason_category IN ('price', 'timing', 'competitor', 'scope_mismatch', 'no_decision', 'relationship', 'other')),
    technical_requirements TEXT,
    owner_user_id          TEXT NOT NULL,
    visibility_mode        TEXT NOT NULL CHECK (visibility_mode IN ('global', 'workspace_local', 'shared')),
    created_by             TEXT NOT NULL,
    created_at             TEXT NOT NULL,
    updated_at             TEXT NOT NULL,
    version                INTEGER NOT NULL DEFAULT 1
);

CREATE INDEX opportunities_workspace_created_idx ON opportunities (workspace_id, created_at);

CREATE TABLE idempotency_keys (
    workspace_id   TEXT NOT NULL,
    key            TEXT NOT NULL,
    request_hash   TEXT NOT NULL,
    opportunity_id TEXT NOT NULL REFERENCES opportunities (id),
    response       TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    PRIMARY KEY (workspace_id, key)
);

CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

-- Opportunities in the sales pipeline, and the idempotency keys of their creates.
CREATE TABLE opportunities (
    id                     uuid PRIMARY KEY,
    workspace_id           uuid NOT NULL,
    customer_id            uuid NOT NULL,
    primary_contact_id     uuid,
    site_id                uuid,
    title                  text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
    stage                  text NOT NULL CHECK (stage IN ('lead', 'qualified', 'survey', 'proposal', 'negotiation', 'won', 'lost')),
    pipeline_type          text NOT NULL CHECK (pipeline_type IN ('new_construction', 'retrofit', 'service_agreement', 'expansion', 'other')),
    source                 text CHECK (source IN ('referral', 'website', 'cold_call', 'existing_customer', 'partner', 'trade_show', 'portal_request', 'other')),
    estimated_value        numeric(15, 2) CHECK (estimated_value BETWEEN 0 AND 1000000000000),
    expected_close_date    timestamptz,
    probability            smallint CHECK (probability BETWEEN 0 AND 100),
    solution_families      text[] NOT NULL DEFAULT '{}',
    scope_summary          text,
    competitor_notes       text,
    win_loss_reason        text,
    next_step_description  text,
    next_step_date         timestamptz,
    bid_due_date           timestamptz,
    budget_confirmed       boolean NOT NULL DEFAULT false,
    priority               text CHECK (priority IN ('low', 'medium', 'high', 'urgent')),
    lost_reason_category   text CHECK (lost_reason_category IN ('price', 'timing', 'competitor', 'scope_mismatch', 'no_decision', 'relationship', 'other')),
    technical_requirements text,
    owner_user_id          uuid NOT NULL,
    visibility_mode        text NOT NULL CHECK (visibility_mode IN ('global', 'workspace_local', 'shared')),
    created_by             uuid NOT NULL,
    created_at             timestamptz NOT NULL,
    updated_at             timestamptz NOT NULL,
    version                integer NOT NULL DEFAULT 1
);

CREATE INDEX opportunities_workspace_created_idx ON opportunities (workspace_id, created_at);

CREATE TABLE idempotency_keys (
    workspace_id   uuid NOT NULL,
    key            text NOT NULL,
    request_hash   text NOT NULL,
    opportunity_id uuid NOT NULL REFERENCES opportunities (id),
    response       text NOT NULL,
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, key)
);

CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

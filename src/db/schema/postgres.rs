// @generated automatically by Diesel CLI.

diesel::table! {
    idempotency_keys (workspace_id, key) {
        workspace_id -> Uuid,
        key -> Text,
        request_hash -> Text,
        opportunity_id -> Uuid,
        response -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    opportunities (id) {
        id -> Uuid,
        workspace_id -> Uuid,
        customer_id -> Uuid,
        primary_contact_id -> Nullable<Uuid>,
        site_id -> Nullable<Uuid>,
        title -> Text,
        stage -> Text,
        pipeline_type -> Text,
        source -> Nullable<Text>,
        estimated_value -> Nullable<Numeric>,
        expected_close_date -> Nullable<Timestamptz>,
        probability -> Nullable<Int2>,
        solution_families -> Array<Text>,
        scope_summary -> Nullable<Text>,
        competitor_notes -> Nullable<Text>,
        win_loss_reason -> Nullable<Text>,
        next_step_description -> Nullable<Text>,
        next_step_date -> Nullable<Timestamptz>,
        bid_due_date -> Nullable<Timestamptz>,
        budget_confirmed -> Bool,
        priority -> Nullable<Text>,
        lost_reason_category -> Nullable<Text>,
        technical_requirements -> Nullable<Text>,
        owner_user_id -> Uuid,
        visibility_mode -> Text,
        created_by -> Uuid,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        version -> Int4,
        updated_pos -> Int8,
        close_pos -> Int8,
        value_pos -> Int8,
        archived_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    opportunity_events (position) {
        position -> Int8,
        kind -> Text,
        occurred_at -> Timestamptz,
        workspace_id -> Uuid,
        actor -> Uuid,
        opportunity_id -> Uuid,
        visible_elsewhere -> Bool,
        stage -> Text,
        pipeline_type -> Text,
        owner_user_id -> Uuid,
        opportunity -> Text,
    }
}

diesel::table! {
    opportunity_event_feed (id) {
        id -> Int2,
        last_position -> Int8,
        purged_through -> Int8,
    }
}

diesel::joinable!(idempotency_keys -> opportunities (opportunity_id));

diesel::allow_tables_to_appear_in_same_query!(
    idempotency_keys,
    opportunities,
    opportunity_events,
    opportunity_event_feed,
);

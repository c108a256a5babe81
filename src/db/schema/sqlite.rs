// @generated automatically by Diesel CLI.

diesel::table! {
    idempotency_keys (workspace_id, key) {
        workspace_id -> Text,
        key -> Text,
        request_hash -> Text,
        opportunity_id -> Text,
        response -> Text,
        created_at -> Text,
    }
}

diesel::table! {
    opportunities (id) {
        id -> Text,
        workspace_id -> Text,
        customer_id -> Text,
        primary_contact_id -> Nullable<Text>,
        site_id -> Nullable<Text>,
        title -> Text,
        stage -> Text,
        pipeline_type -> Text,
        source -> Nullable<Text>,
        estimated_value_cents -> Nullable<BigInt>,
        expected_close_date -> Nullable<Text>,
        probability -> Nullable<Integer>,
        solution_families -> Text,
        scope_summary -> Nullable<Text>,
        competitor_notes -> Nullable<Text>,
        win_loss_reason -> Nullable<Text>,
        next_step_description -> Nullable<Text>,
        next_step_date -> Nullable<Text>,
        bid_due_date -> Nullable<Text>,
        budget_confirmed -> Bool,
        priority -> Nullable<Text>,
        lost_reason_category -> Nullable<Text>,
        technical_requirements -> Nullable<Text>,
        owner_user_id -> Text,
        visibility_mode -> Text,
        created_by -> Text,
        created_at -> Text,
        updated_at -> Text,
        version -> Integer,
        updated_pos -> BigInt,
        close_pos -> BigInt,
        value_pos -> BigInt,
        archived_at -> Nullable<Text>,
    }
}

diesel::table! {
    opportunity_events (position) {
        position -> BigInt,
        kind -> Text,
        occurred_at -> Text,
        workspace_id -> Text,
        actor -> Text,
        opportunity_id -> Text,
        visible_elsewhere -> Bool,
        stage -> Text,
        pipeline_type -> Text,
        owner_user_id -> Text,
        opportunity -> Text,
    }
}

diesel::table! {
    opportunity_event_feed (id) {
        id -> Integer,
        last_position -> BigInt,
        purged_through -> BigInt,
    }
}

diesel::joinable!(idempotency_keys -> opportunities (opportunity_id));

diesel::allow_tables_to_appear_in_same_query!(
    idempotency_keys,
    opportunities,
    opportunity_events,
    opportunity_event_feed,
);

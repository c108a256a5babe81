//! The tables, one definition for both backends. The types of `super::types::sql` (`Id`,
//! `Instant`, `Labels`) name each backend's native column type; every other type is one both
//! backends share. Kept by hand (`diesel print-schema` writes one backend's native types): a
//! change to a migration of either backend changes this file in the same commit, and the test
//! suite, which runs every query on both backends, fails where the two disagree.

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::types::sql::*;

    idempotency_keys (workspace_id, key) {
        workspace_id -> Id,
        key -> Text,
        request_hash -> Text,
        opportunity_id -> Id,
        response -> Text,
        created_at -> Instant,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::types::sql::*;

    opportunities (id) {
        id -> Id,
        workspace_id -> Id,
        customer_id -> Id,
        primary_contact_id -> Nullable<Id>,
        site_id -> Nullable<Id>,
        title -> Text,
        stage -> Text,
        pipeline_type -> Text,
        source -> Nullable<Text>,
        estimated_value_cents -> Nullable<BigInt>,
        expected_close_date -> Nullable<Instant>,
        probability -> Nullable<Integer>,
        solution_families -> Labels,
        scope_summary -> Nullable<Text>,
        competitor_notes -> Nullable<Text>,
        win_loss_reason -> Nullable<Text>,
        next_step_description -> Nullable<Text>,
        next_step_date -> Nullable<Instant>,
        bid_due_date -> Nullable<Instant>,
        budget_confirmed -> Bool,
        priority -> Nullable<Text>,
        lost_reason_category -> Nullable<Text>,
        technical_requirements -> Nullable<Text>,
        owner_user_id -> Id,
        visibility_mode -> Text,
        created_by -> Id,
        created_at -> Instant,
        updated_at -> Instant,
        version -> Integer,
        updated_pos -> BigInt,
        close_pos -> BigInt,
        value_pos -> BigInt,
        archived_at -> Nullable<Instant>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use crate::db::types::sql::*;

    opportunity_events (position) {
        position -> BigInt,
        kind -> Text,
        occurred_at -> Instant,
        workspace_id -> Id,
        actor -> Id,
        opportunity_id -> Id,
        visible_elsewhere -> Bool,
        stage -> Text,
        pipeline_type -> Text,
        owner_user_id -> Id,
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

//! The lifecycle of CONTRACT.md §8: get, list, update, archive and restore, over real JSON-RPC,
//! on the backend of the run (SQLite, or PostgreSQL with `TEST_DATABASE_URL`).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use opportunity_client::{
    ArchiveOpportunity, Archived, Client, CreateOpportunity, Include, ListOpportunities, LostReasonCategory, Money,
    Opportunity, OpportunityPage, Order, OrderBy, PipelineType, Priority, RestoreOpportunity, Stage, UpdateOpportunity,
    VisibilityMode,
};
use opportunity_service::auth::ALL_SCOPES;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::*;

/// An instant written as RFC 3339.
#[track_caller]
fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap_or_else(|e| panic!("{text:?} is no RFC 3339 instant: {e}"))
}

/// The ids of a page, in its order.
fn ids(page: &OpportunityPage) -> Vec<Uuid> {
    page.items.iter().map(|o| o.id).collect()
}

#[tokio::test]
async fn get_answers_the_stored_opportunity_and_archived_at_is_null() {
    let app = spawn_app().await;
    let client = app.client();
    let value = Money::from_cents(12_500_050);
    let created = client.create(new_opportunity("Chiller retrofit").estimated_value(value)).await.unwrap();
    assert_eq!(created.archived_at, None, "a create answers archivedAt: null");
    assert_eq!(created.estimated_value, Some(value));
    assert_eq!(client.get(created.id).await.unwrap(), created, "get answers what create answered");
    // On the wire: archivedAt is there, as null. An id in capitals works, and so do a
    // one-element array holding the params and WebSocket, all answering the same JSON.
    let token = app.token();
    let got = call(&app, &token, "opportunity.get", json!({"id": created.id.to_string().to_uppercase()})).await;
    let wire = ok(&got).clone();
    assert_eq!(wire.get("archivedAt"), Some(&Value::Null), "{wire}");
    assert_eq!(serde_json::from_value::<Opportunity>(wire.clone()).unwrap(), created);
    let got = call(&app, &token, "opportunity.get", json!([{"id": created.id}])).await;
    assert_eq!(ok(&got), &wire);
    let auth = format!("Bearer {token}");
    let ws = app.ws(&[("authorization", &auth)]).await;
    let mut params = jsonrpsee::core::params::ObjectParams::new();
    params.insert("id", created.id).unwrap();
    let via_ws: Value = jsonrpsee::core::client::ClientT::request(&ws, "opportunity.get", params).await.unwrap();
    assert_eq!(via_ws, wire);
}

#[tokio::test]
async fn missing_and_unreadable_opportunities_get_the_same_not_found() {
    let app = spawn_app().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let in_a = token_for(app.user, &[a], ALL_SCOPES);
    let in_b = token_for(app.user, &[b], ALL_SCOPES);
    let local = create(&app, &in_a, json!({})).await;
    let shared = create(&app, &in_a, json!({"visibilityMode": "shared"})).await;
    let global = create(&app, &in_a, json!({"visibilityMode": "global"})).await;

    let missing = Uuid::new_v4().to_string();
    let strip = |r: &Value| {
        let mut e = r["error"].clone();
        e["message"] = json!("");
        e
    };
    let r1 = call(&app, &in_b, "opportunity.get", json!({"id": id(&local)})).await;
    let r2 = call(&app, &in_b, "opportunity.get", json!({"id": missing})).await;
    err(&r1, -32004, "NOT_FOUND");
    err(&r2, -32004, "NOT_FOUND");
    assert_eq!(strip(&r1), strip(&r2), "nothing tells an unreadable opportunity from a missing one");
    assert_eq!(r1["error"]["data"].as_object().unwrap().len(), 2, "only code and httpStatus: {r1}");

    // shared and global are readable from any workspace
    for o in [&shared, &global] {
        assert_eq!(ok(&call(&app, &in_b, "opportunity.get", json!({"id": id(o)})).await), o);
    }
}

#[tokio::test]
async fn bad_params_of_every_method_are_reported_at_once() {
    let app = spawn_app().await;
    let token = app.token();
    let r = call(&app, &token, "opportunity.get", json!({"id": "nope", "extra": 1})).await;
    field_errors(&r, &["id"]);
    assert_eq!(r["error"]["data"]["formErrors"], json!(["unknown field \"extra\""]));
    field_errors(&call(&app, &token, "opportunity.get", json!({})).await, &["id"]);
    // Params left out or `null` are params with no member: what is missing is named, and the
    // shape is no problem of its own (it was a formErrors entry).
    for (method, missing) in [
        ("opportunity.create", &["customerId", "title", "pipelineType"][..]),
        ("opportunity.get", &["id"][..]),
        ("opportunity.archive", &["id", "expectedVersion"][..]),
    ] {
        for params in [None, Some(Value::Null)] {
            let mut body = json!({"jsonrpc": "2.0", "id": 1, "method": method});
            if let Some(params) = params {
                body["params"] = params;
            }
            let (_, r) = app.post(&body, &token).await;
            field_errors(&r, missing);
            let fields = r["error"]["data"]["fieldErrors"].as_object().unwrap();
            assert_eq!(fields.len(), missing.len(), "{method}, {body}: only what is missing: {r}");
            assert_eq!(r["error"]["data"]["formErrors"], json!([]), "{method}, {body}: {r}");
        }
    }
    // A version beyond what a 64-bit integer holds is refused, not taken for another number.
    for version in [json!(9223372036854775808_u64), json!(1e19), json!(1e300)] {
        let params = json!({"id": Uuid::new_v4(), "expectedVersion": version, "priority": "low"});
        let r = call(&app, &token, "opportunity.update", params).await;
        field_errors(&r, &["expectedVersion"]);
        let message = r["error"]["data"]["fieldErrors"]["expectedVersion"][0].as_str().unwrap();
        assert!(message.contains("at most 9223372036854775807"), "{version}: {r}");
    }
    // Up to that, a version no opportunity has reached is a version_mismatch that names it.
    let o = create(&app, &token, json!({})).await;
    for version in [json!(1_000_000_000_000_000_000_i64), json!(i64::MAX), json!(1e18)] {
        let params = json!({"id": id(&o), "expectedVersion": version, "priority": "low"});
        let r = call(&app, &token, "opportunity.update", params).await;
        assert_eq!(r["error"]["data"]["reason"], "version_mismatch", "{version}: {r}");
    }
    let r = call(&app, &token, "opportunity.update", json!({"id": 1, "expectedVersion": 0, "title": " "})).await;
    field_errors(&r, &["id", "expectedVersion", "title"]);
    let r =
        call(&app, &token, "opportunity.update", json!({"id": Uuid::new_v4(), "expectedVersion": "1", "stage": "x"}))
            .await;
    field_errors(&r, &["expectedVersion", "stage"]);
    let r = call(&app, &token, "opportunity.archive", json!({"id": Uuid::new_v4()})).await;
    field_errors(&r, &["expectedVersion"]);
    let r =
        call(&app, &token, "opportunity.restore", json!({"id": Uuid::new_v4(), "expectedVersion": 1.5, "title": "x"}))
            .await;
    field_errors(&r, &["expectedVersion"]);
    assert_eq!(r["error"]["data"]["formErrors"], json!(["unknown field \"title\""]));
    let r = call(
        &app,
        &token,
        "opportunity.list",
        json!({"limit": 0, "stage": ["lead", "nope"], "orderBy": "title", "order": "up", "include": "all",
               "archived": "yes", "titleContains": "", "customerId": "x", "isClosed": "no",
               "expectedCloseFrom": "2026-01-01", "cursor": 5}),
    )
    .await;
    field_errors(
        &r,
        &[
            "limit",
            "stage.1",
            "orderBy",
            "order",
            "include",
            "archived",
            "titleContains",
            "customerId",
            "isClosed",
            "expectedCloseFrom",
            "cursor",
        ],
    );
    field_errors(&call(&app, &token, "opportunity.list", json!({"limit": 201})).await, &["limit"]);
    field_errors(
        &call(&app, &token, "opportunity.list", json!({"limit": 201, "cursor": "abc"})).await,
        &["limit", "cursor"],
    );
    // rules across fields that the params alone break come with the other problems, before
    // the opportunity is even looked up
    let r = call(
        &app,
        &token,
        "opportunity.update",
        json!({"id": Uuid::new_v4(), "expectedVersion": 1, "stage": "won", "probability": 50, "title": null,
               "lostReasonCategory": "price"}),
    )
    .await;
    field_errors(&r, &["probability", "title", "lostReasonCategory"]);
    // Params that are not an object
    let r = call(&app, &token, "opportunity.list", json!("x")).await;
    err(&r, -32602, "BAD_REQUEST");
}

#[tokio::test]
async fn checks_run_in_the_contracts_order() {
    let app = spawn_app().await;
    let other = Uuid::new_v4();
    // no token → UNAUTHORIZED, before the params
    let r = app.post_raw(request(json!(1), "opportunity.get", json!({"id": "bad"})).to_string(), &[]).await.1;
    err(&r, -32001, "UNAUTHORIZED");
    // read scope missing → FORBIDDEN before the params
    let none = token_for(app.user, &[app.workspace], "something:else");
    err(&call(&app, &none, "opportunity.get", json!({"id": "bad"})).await, -32003, "FORBIDDEN");
    // read-only tokens read but do not write
    let reader = token_for(app.user, &[app.workspace], "opportunity:read");
    err(&call(&app, &reader, "opportunity.update", json!({"id": "bad"})).await, -32003, "FORBIDDEN");
    let o = create(&app, &app.token(), json!({})).await;
    assert_eq!(ok(&call(&app, &reader, "opportunity.get", json!({"id": id(&o)})).await), &o);
    ok(&call(&app, &reader, "opportunity.list", json!({})).await);
    // params before the workspace grant
    let r = call(&app, &app.token(), "opportunity.get", json!({"id": "bad", "workspaceId": other})).await;
    field_errors(&r, &["id"]);
    let r = call(&app, &app.token(), "opportunity.get", json!({"id": id(&o), "workspaceId": other})).await;
    err(&r, -32003, "FORBIDDEN");
    // several workspaces and none named: a field error
    let two = token_for(app.user, &[app.workspace, other], ALL_SCOPES);
    field_errors(&call(&app, &two, "opportunity.list", json!({})).await, &["workspaceId"]);
    let listed = call(&app, &two, "opportunity.list", json!({"workspaceId": app.workspace})).await;
    assert_eq!(ok(&listed)["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn update_changes_named_fields_only_and_bumps_the_version() {
    let app = spawn_app().await;
    let (client, token) = (app.client(), app.token());
    let o = client
        .create(
            new_opportunity("Chiller")
                .estimated_value(Money::from_units(10))
                .priority(Priority::High)
                .solution_families(["hvac"])
                .scope_summary("s"),
        )
        .await
        .unwrap();
    // Sent as text: a title with spaces around it, a date with an offset. Answered trimmed, and
    // in UTC.
    let r = call(
        &app,
        &token,
        "opportunity.update",
        json!({"id": o.id, "expectedVersion": 1, "title": "  New title ", "priority": null,
               "solutionFamilies": null, "estimatedValue": 99.99, "expectedCloseDate": "2027-03-31T19:00:00+02:00"}),
    )
    .await;
    assert_eq!(ok(&r)["title"], "New title");
    assert_eq!(ok(&r)["expectedCloseDate"], "2027-03-31T17:00:00Z");
    let u: Opportunity = serde_json::from_value(ok(&r).clone()).unwrap();
    let want = Opportunity {
        version: 2,
        title: "New title".into(),
        priority: None,
        solution_families: vec![],
        estimated_value: Some(Money::from_cents(9999)),
        expected_close_date: Some(at("2027-03-31T17:00:00Z")),
        updated_at: u.updated_at,
        ..o.clone()
    };
    assert_eq!(u, want, "the named fields change; absent fields (scopeSummary, createdAt, ...) stay");
    assert!(u.updated_at >= o.updated_at);
    assert_eq!(client.get(o.id).await.unwrap(), u, "stored as answered");

    // null for a required field is refused; ownerUserId null goes back to the caller
    let r = call(&app, &token, "opportunity.update", json!({"id": o.id, "expectedVersion": 2, "title": null})).await;
    field_errors(&r, &["title"]);
    let other_owner = Uuid::new_v4();
    let given = client.update(UpdateOpportunity::new(o.id, 2).owner_user_id(other_owner)).await.unwrap();
    assert_eq!(given, Opportunity { owner_user_id: other_owner, version: 3, updated_at: given.updated_at, ..u });
    let back = client.update(UpdateOpportunity::new(o.id, 3).clear_owner_user_id()).await.unwrap();
    assert_eq!(back, Opportunity { owner_user_id: app.user, version: 4, updated_at: back.updated_at, ..given });

    // nothing to change
    let r = call(&app, &token, "opportunity.update", json!({"id": o.id, "expectedVersion": 4})).await;
    let data = err(&r, -32602, "BAD_REQUEST");
    assert!(data["formErrors"][0].as_str().unwrap().contains("nothing to change"), "{r}");

    // a change to the values already stored writes nothing: same version, same updatedAt
    let same = client.update(UpdateOpportunity::new(o.id, 4).title("New title")).await.unwrap();
    assert_eq!(same, back);
    assert_eq!(client.get(o.id).await.unwrap(), back);
}

#[tokio::test]
async fn an_update_of_every_field_is_stored_and_published_exactly_as_answered() {
    let app = spawn_app().await;
    let token = app.token();
    let o = create(&app, &token, json!({})).await;
    // Every field the update may change, with values whose text a writer could mangle: quotes,
    // backslashes, JSON look-alikes, array-literal look-alikes (`NULL`, commas), characters
    // beyond the BMP, the largest exact amount, microseconds.
    let text = "Chiller \"C\" \\ plant {\"a\": [1]} — Ωμέγα 🏢 ünïcødé";
    let every = json!({
        "customerId": Uuid::new_v4(), "primaryContactId": Uuid::new_v4(), "siteId": Uuid::new_v4(),
        "title": text, "stage": "negotiation", "pipelineType": "service_agreement", "source": "referral",
        "estimatedValue": 1_000_000_000_000u64, "expectedCloseDate": "2027-06-30T23:59:59.123456Z",
        "probability": 65, "solutionFamilies": ["hvac_controls", text, "bms", "NULL", "a,b"], "scopeSummary": text,
        "competitorNotes": text, "winLossReason": text, "nextStepDescription": text,
        "nextStepDate": "2027-01-02T03:04:05.000001Z", "bidDueDate": "2027-02-03T04:05:06.7Z",
        "budgetConfirmed": true, "priority": "urgent", "technicalRequirements": text,
        "ownerUserId": Uuid::new_v4(), "visibilityMode": "global"
    });
    let mut params = json!({"id": id(&o), "expectedVersion": 1});
    params.as_object_mut().unwrap().extend(every.as_object().unwrap().clone());
    let changed = ok(&call(&app, &token, "opportunity.update", params).await).clone();
    for (field, value) in every.as_object().unwrap() {
        if field != "estimatedValue" {
            assert_eq!(&changed[field], value, "{field} as sent");
        }
    }
    assert_eq!(changed["estimatedValue"].as_f64(), Some(1e12));
    let got = ok(&call(&app, &token, "opportunity.get", json!({"id": id(&o)})).await).clone();
    assert_eq!(got, changed, "stored as answered");

    // Every field that may be null, cleared at once.
    let nulls = [
        "primaryContactId",
        "siteId",
        "source",
        "estimatedValue",
        "expectedCloseDate",
        "probability",
        "scopeSummary",
        "competitorNotes",
        "winLossReason",
        "nextStepDescription",
        "nextStepDate",
        "bidDueDate",
        "priority",
        "technicalRequirements",
    ];
    let mut params = json!({"id": id(&o), "expectedVersion": 2});
    for field in nulls {
        params[field] = Value::Null;
    }
    let cleared = ok(&call(&app, &token, "opportunity.update", params).await).clone();
    for field in nulls {
        assert_eq!(cleared[field], Value::Null, "{field} cleared");
    }
    assert_eq!(ok(&call(&app, &token, "opportunity.get", json!({"id": id(&o)})).await), &cleared, "stored as answered");

    // Each change's event carries the opportunity as answered.
    let feed = ok(&call(&app, &token, "opportunity.changes", json!({})).await).clone();
    let published: Vec<&Value> = feed["events"].as_array().unwrap().iter().map(|e| &e["opportunity"]).collect();
    assert_eq!(published[1..], [&changed, &cleared], "{feed}");
}

#[tokio::test]
async fn stage_conveniences_and_rules_across_fields_hold_after_the_change() {
    let app = spawn_app().await;
    let (client, token) = (app.client(), app.token());
    let o = client.create(new_opportunity("Chiller").probability(40)).await.unwrap();
    let change = |version: i32| UpdateOpportunity::new(o.id, version);
    // The refused changes go as JSON, for their field errors.
    let update = |version: i64, fields: Value| {
        let mut params = json!({"id": o.id, "expectedVersion": version});
        params.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        params
    };
    // won without probability sets 100
    let won = client.update(change(1).stage(Stage::Won)).await.unwrap();
    assert_eq!((won.probability, won.is_won, won.is_closed), (Some(100), true, true));
    // won with probability 50 is refused on probability and in formErrors
    let r = call(&app, &token, "opportunity.update", update(2, json!({"probability": 50}))).await;
    field_errors(&r, &["probability"]);
    assert!(!r["error"]["data"]["formErrors"].as_array().unwrap().is_empty(), "{r}");
    // lost sets 0; lostReasonCategory allowed with lost
    let lost =
        client.update(change(2).stage(Stage::Lost).lost_reason_category(LostReasonCategory::Price)).await.unwrap();
    assert_eq!((lost.probability, lost.is_closed, lost.is_won), (Some(0), true, false));
    assert_eq!(lost.lost_reason_category, Some(LostReasonCategory::Price));
    // away from lost without naming lostReasonCategory clears it
    let proposal = client.update(change(3).stage(Stage::Proposal)).await.unwrap();
    assert_eq!((proposal.lost_reason_category, proposal.is_closed), (None, false));
    assert_eq!(proposal.probability, Some(0), "probability stays when leaving lost");
    // lostReasonCategory without lost is refused
    let r = call(&app, &token, "opportunity.update", update(4, json!({"lostReasonCategory": "timing"}))).await;
    field_errors(&r, &["lostReasonCategory"]);
    // away from lost while naming it is refused
    let lost_again = client.update(change(4).stage(Stage::Lost)).await.unwrap();
    assert_eq!((lost_again.stage, lost_again.version), (Stage::Lost, 5));
    let r =
        call(&app, &token, "opportunity.update", update(5, json!({"stage": "lead", "lostReasonCategory": "timing"})))
            .await;
    field_errors(&r, &["lostReasonCategory"]);
}

#[tokio::test]
async fn stale_versions_conflict_and_concurrent_updates_have_one_winner() {
    let app = spawn_app().await;
    let client = app.client();
    let o = client.create(new_opportunity("Chiller")).await.unwrap();
    let stale = client.update(UpdateOpportunity::new(o.id, 3).title("x")).await.unwrap_err();
    assert_eq!(refusal(&stale), (Some(-32009), Some("CONFLICT"), Some("version_mismatch")));
    assert_eq!(stale.current_version(), Some(1));
    // A version beyond any an opportunity reaches is a mismatch too, and its message names it
    // as sent (it said 2147483647).
    let token = app.token();
    let beyond = json!({"id": o.id, "expectedVersion": 3_000_000_000u64, "title": "x"});
    let r = call(&app, &token, "opportunity.update", beyond).await;
    assert_eq!(r["error"]["data"]["reason"], "version_mismatch", "{r}");
    assert_eq!(r["error"]["data"]["currentVersion"], 1, "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("expectedVersion is 3000000000"), "{r}");

    let calls = (0..8).map(|i| client.update(UpdateOpportunity::new(o.id, 1).title(format!("t{i}"))));
    let answers = futures_util::future::join_all(calls).await;
    let winners: Vec<_> = answers.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    for loser in answers.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(refusal(loser), (Some(-32009), Some("CONFLICT"), Some("version_mismatch")));
    }
    let stored = client.get(o.id).await.unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(&stored, winners[0], "stored as the winner was answered");
}

#[tokio::test]
async fn archive_and_restore_keep_the_record_and_list_leaves_archived_out() {
    let app = spawn_app().await;
    let client = app.client();
    let o = client.create(new_opportunity("Archived soon")).await.unwrap();
    let keep = client.create(new_opportunity("Kept")).await.unwrap();
    let archived = client.archive(ArchiveOpportunity::new(o.id, 1)).await.unwrap();
    assert_eq!(archived.version, 2);
    assert_eq!(archived.archived_at, Some(archived.updated_at));
    // again: nothing changes
    assert_eq!(client.archive(ArchiveOpportunity::new(o.id, 2)).await.unwrap(), archived);
    // updates are refused while archived; stale versions first
    let e = client.update(UpdateOpportunity::new(o.id, 2).title("x")).await.unwrap_err();
    assert_eq!(refusal(&e), (Some(-32009), Some("CONFLICT"), Some("archived")));
    let e = client.update(UpdateOpportunity::new(o.id, 1).title("x")).await.unwrap_err();
    assert_eq!(refusal(&e), (Some(-32009), Some("CONFLICT"), Some("version_mismatch")));
    // get still answers it
    assert_eq!(client.get(o.id).await.unwrap(), archived);
    assert_eq!(ids(&client.list(&ListOpportunities::new()).await.unwrap()), [keep.id]);
    assert_eq!(ids(&client.list(&ListOpportunities::new().archived(Archived::Only)).await.unwrap()), [o.id]);
    let all = ids(&client.list(&ListOpportunities::new().archived(Archived::Include)).await.unwrap());
    assert_eq!(all.len(), 2);
    // restore
    let restored = client.restore(RestoreOpportunity::new(o.id, 2)).await.unwrap();
    assert_eq!((restored.archived_at, restored.version), (None, 3));
    let again = client.restore(RestoreOpportunity::new(o.id, 3)).await.unwrap();
    assert_eq!(again, restored, "restoring what is not archived changes nothing");
    assert_eq!(app.count(Some(app.workspace)).await, 2, "nothing is ever deleted");
}

#[tokio::test]
async fn who_may_change_follows_the_visibility_table() {
    let app = spawn_app().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let in_a = token_for(app.user, &[a], ALL_SCOPES);
    let in_b = token_for(app.user, &[b], ALL_SCOPES);
    let in_b_no_global = token_for(app.user, &[b], "opportunity:read opportunity:write");
    let (client_a, client_b) = (app.client_as(&in_a), app.client_as(&in_b));
    let local = client_a.create(new_opportunity("Local")).await.unwrap();
    let shared = client_a.create(new_opportunity("Shared").visibility_mode(VisibilityMode::Shared)).await.unwrap();
    let global = client_a.create(new_opportunity("Global").visibility_mode(VisibilityMode::Global)).await.unwrap();
    // The refusals go as JSON, for their whole envelope.
    let change = |o: &Opportunity| json!({"id": o.id, "expectedVersion": 1, "title": "from b"});
    err(&call(&app, &in_b, "opportunity.update", change(&local)).await, -32004, "NOT_FOUND");
    err(&call(&app, &in_b, "opportunity.update", change(&shared)).await, -32003, "FORBIDDEN");
    err(
        &call(&app, &in_b, "opportunity.archive", json!({"id": shared.id, "expectedVersion": 1})).await,
        -32003,
        "FORBIDDEN",
    );
    err(&call(&app, &in_b_no_global, "opportunity.update", change(&global)).await, -32003, "FORBIDDEN");
    // with opportunity:global, B changes A's global opportunity, which stays A's
    let from_b = client_b.update(UpdateOpportunity::new(global.id, 1).title("from b")).await.unwrap();
    let want = Opportunity { title: "from b".into(), version: 2, updated_at: from_b.updated_at, ..global.clone() };
    assert_eq!(from_b, want);
    assert_eq!(client_a.get(global.id).await.unwrap(), from_b);
    // FORBIDDEN comes before a stale version
    let stale = json!({"id": shared.id, "expectedVersion": 9, "title": "x"});
    err(&call(&app, &in_b, "opportunity.update", stale).await, -32003, "FORBIDDEN");
    // becoming global needs opportunity:global
    let in_a_no_global = token_for(app.user, &[a], "opportunity:write");
    let r = call(
        &app,
        &in_a_no_global,
        "opportunity.update",
        json!({"id": local.id, "expectedVersion": 1, "visibilityMode": "global"}),
    )
    .await;
    err(&r, -32003, "FORBIDDEN");
    // include: visible lists shared and global of other workspaces, own does not
    let listed = async |params: ListOpportunities| -> BTreeSet<Uuid> {
        client_b.list(&params).await.unwrap().items.into_iter().map(|o| o.id).collect()
    };
    assert!(listed(ListOpportunities::new()).await.is_empty());
    assert_eq!(listed(ListOpportunities::new().include(Include::Visible)).await, [shared.id, global.id].into());
}

#[tokio::test]
async fn idempotency_keys_replay_changes_and_share_one_space_with_create() {
    let app = spawn_app().await;
    let (client, token) = (app.client(), app.token());
    let o = client.create(new_opportunity("Chiller").idempotency_key("k-create")).await.unwrap();
    let rename = UpdateOpportunity::new(o.id, 1).title("renamed").idempotency_key("k-update");
    let first = client.update(rename.clone()).await.unwrap();
    assert_eq!((first.title.as_str(), first.version), ("renamed", 2));
    assert_eq!(client.update(rename).await.unwrap(), first, "a replay answers the first answer");
    assert_eq!(client.get(o.id).await.unwrap(), first, "the replay wrote nothing");
    // The refusals go as JSON, for their whole envelope.
    let other = json!({"id": o.id, "expectedVersion": 2, "title": "other", "idempotencyKey": "k-update"});
    let r = call(&app, &token, "opportunity.update", other).await;
    assert_eq!(err(&r, -32009, "CONFLICT")["reason"], "idempotency_key_reused");
    // the create's key cannot be reused by an archive
    let r = call(
        &app,
        &token,
        "opportunity.archive",
        json!({"id": o.id, "expectedVersion": 2, "idempotencyKey": "k-create"}),
    )
    .await;
    assert_eq!(err(&r, -32009, "CONFLICT")["reason"], "idempotency_key_reused");
    // the header works too, and must agree with the field
    let auth = format!("Bearer {token}");
    let body = request(json!(1), "opportunity.archive", json!({"id": o.id, "expectedVersion": 2})).to_string();
    let (_, a1) = app.post_raw(body.clone(), &[("authorization", &auth), ("idempotency-key", "k-archive")]).await;
    let (_, a2) = app.post_raw(body, &[("authorization", &auth), ("idempotency-key", "k-archive")]).await;
    assert_eq!(ok(&a1), ok(&a2));
    let body =
        request(json!(1), "opportunity.restore", json!({"id": o.id, "expectedVersion": 3, "idempotencyKey": "a"}))
            .to_string();
    let (_, r) = app.post_raw(body, &[("authorization", &auth), ("idempotency-key", "b")]).await;
    field_errors(&r, &["idempotencyKey"]);
}

/// The customer of every seeded opportunity.
const CUSTOMER: Uuid = Uuid::from_u128(0x550e8400_e29b_41d4_a716_446655440000);

/// Creates `n` retrofit opportunities of [`CUSTOMER`] in the stages lead, proposal and won in
/// turn, with repeated and missing expectedCloseDate and estimatedValue (so that ties and nulls
/// are exercised) and titles holding LIKE's metacharacters; returns them as answered.
async fn seed(client: &Client, n: usize) -> Vec<Opportunity> {
    let mut out = Vec::new();
    for i in 0..n {
        let title = format!("Chiller {} {}", ["A%", "b_", "C\\"][i % 3], i);
        let mut params = CreateOpportunity::new(CUSTOMER, title, PipelineType::Retrofit)
            .stage([Stage::Lead, Stage::Proposal, Stage::Won][i % 3]);
        if i % 4 != 3 {
            params = params.expected_close_date(at(&format!("2027-0{}-01T00:00:00Z", 1 + i % 3)));
        }
        if i % 5 != 4 {
            params = params.estimated_value(Money::from_cents((i % 3) as i64 * 100_050));
        }
        out.push(client.create(params).await.unwrap());
    }
    out
}

/// Follows `nextCursor` from the first page of `params`, `limit` a page; returns every id in order.
async fn all_pages(client: &Client, params: &ListOpportunities, limit: u32) -> Vec<Uuid> {
    let mut found = Vec::new();
    let mut params = params.clone().limit(limit);
    for _ in 0..100 {
        let page = client.list(&params).await.unwrap();
        assert!(page.items.len() <= limit as usize);
        found.extend(ids(&page));
        match page.next_cursor {
            Some(cursor) => params = params.cursor(cursor),
            None => return found,
        }
    }
    panic!("more than 100 pages");
}

/// The ids of `items` in the order a list by `field` must answer them: by its value, nulls last
/// either way, then by id in the same direction.
fn expected_order(items: &[Opportunity], field: OrderBy, order: Order) -> Vec<Uuid> {
    let instant = |t: DateTime<Utc>| t.timestamp_nanos_opt().expect("an instant within i64 nanoseconds");
    let key = |o: &Opportunity| -> Option<i64> {
        match field {
            OrderBy::CreatedAt => Some(instant(o.created_at)),
            OrderBy::UpdatedAt => Some(instant(o.updated_at)),
            OrderBy::ExpectedCloseDate => o.expected_close_date.map(instant),
            OrderBy::EstimatedValue => o.estimated_value.map(Money::cents),
        }
    };
    let mut sorted: Vec<&Opportunity> = items.iter().collect();
    sorted.sort_by(|a, b| {
        let nulls_last = key(a).is_none().cmp(&key(b).is_none());
        let (a, b) = if order == Order::Desc { (b, a) } else { (a, b) };
        nulls_last.then(key(a).cmp(&key(b))).then(a.id.cmp(&b.id))
    });
    sorted.iter().map(|o| o.id).collect()
}

#[tokio::test]
async fn list_orders_totally_with_nulls_last_and_pages_without_repeats() {
    let app = spawn_app().await;
    let client = app.client();
    let items = seed(&client, 23).await;
    for &field in OrderBy::ALL {
        for order in [Order::Desc, Order::Asc] {
            let want = expected_order(&items, field, order);
            for limit in [1, 4, 50] {
                let got = all_pages(&client, &ListOpportunities::new().order_by(field).order(order), limit).await;
                assert_eq!(got, want, "orderBy {field} {order}, limit {limit}");
            }
        }
    }
    // the defaults are createdAt desc, 50; the items are answered as created
    let page = client.list(&ListOpportunities::new()).await.unwrap();
    let want: Vec<Opportunity> = expected_order(&items, OrderBy::CreatedAt, Order::Desc)
        .iter()
        .map(|id| items.iter().find(|o| o.id == *id).unwrap().clone())
        .collect();
    assert_eq!(page.items, want);
    assert_eq!(page.next_cursor, None);
}

#[tokio::test]
async fn list_filters_match_the_contract() {
    let app = spawn_app().await;
    let client = app.client();
    let items = seed(&client, 12).await;
    let want = |pred: &dyn Fn(&Opportunity) -> bool| -> BTreeSet<Uuid> {
        items.iter().filter(|o| pred(o)).map(|o| o.id).collect()
    };
    let listed = async |params: &ListOpportunities| -> BTreeSet<Uuid> {
        client.list(params).await.unwrap().items.into_iter().map(|o| o.id).collect()
    };
    let february = at("2027-02-01T00:00:00Z");
    let since = items[5].updated_at;
    type Case<'a> = (ListOpportunities, Box<dyn Fn(&Opportunity) -> bool + 'a>);
    let list = ListOpportunities::new;
    let cases: Vec<Case> = vec![
        (list().stage([Stage::Won, Stage::Lead]), Box::new(|o| matches!(o.stage, Stage::Won | Stage::Lead))),
        (list().stage([]), Box::new(|_| false)),
        (list().is_closed(true), Box::new(|o| o.is_closed)),
        (list().is_closed(false), Box::new(|o| !o.is_closed)),
        (list().pipeline_type([PipelineType::Retrofit]), Box::new(|_| true)),
        (list().pipeline_type([PipelineType::Other]), Box::new(|_| false)),
        (list().customer_id(CUSTOMER), Box::new(|_| true)),
        (list().owner_user_id(Uuid::new_v4()), Box::new(|_| false)),
        (
            list().expected_close_from(february).expected_close_to(at("2027-03-01T00:00:00Z")),
            Box::new(|o| o.expected_close_date == Some(february)),
        ),
        (list().title_contains("a%"), Box::new(|o| o.title.contains("A%"))),
        (list().title_contains("B_"), Box::new(|o| o.title.contains("b_"))),
        (list().title_contains("c\\"), Box::new(|o| o.title.contains("C\\"))),
        (list().title_contains("%"), Box::new(|o| o.title.contains('%'))),
        (list().title_contains("_"), Box::new(|o| o.title.contains('_'))),
        (list().updated_since(since), Box::new(|o| o.updated_at >= since)),
    ];
    for (params, pred) in cases {
        assert_eq!(listed(&params).await, want(&*pred), "{params:?}");
    }
    // As sent: a customerId in capitals, a date with the offset +00:00.
    let as_sent: Vec<(Value, BTreeSet<Uuid>)> = vec![
        (json!({"customerId": "550E8400-E29B-41D4-A716-446655440000"}), want(&|_| true)),
        (
            json!({"expectedCloseFrom": "2027-02-01T00:00:00Z", "expectedCloseTo": "2027-03-01T00:00:00+00:00"}),
            want(&|o| o.expected_close_date == Some(february)),
        ),
    ];
    for (params, want) in as_sent {
        let r = call(&app, &app.token(), "opportunity.list", params.clone()).await;
        let page: OpportunityPage = serde_json::from_value(ok(&r).clone()).unwrap();
        assert_eq!(ids(&page).into_iter().collect::<BTreeSet<_>>(), want, "{params}");
    }
    // Unicode case folding
    let accented = client.create(new_opportunity("Éclairage CAFÉ")).await.unwrap();
    assert_eq!(listed(&list().title_contains("café")).await, [accented.id].into());
}

/// `titleContains` ignores case beyond ASCII the same way on both backends, and on PostgreSQL
/// whatever the database's locale: here one created with `LC_CTYPE 'C'`, whose own `lower()`
/// knows ASCII only.
#[tokio::test]
async fn title_contains_ignores_case_beyond_ascii_whatever_the_database_locale() {
    let db = TestDatabase::with_options("TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'");
    let app = spawn_app_on(db, &[]).await;
    let client = app.client();
    let created = async |title: &str| client.create(new_opportunity(title)).await.unwrap().id;
    let greek = created("ΟΔΟΣ Athens").await;
    let turkish = created("İstanbul depot").await;
    let french = created("ÉCOLE Chiller").await;
    let german = created("Straße 5 fire panel").await;
    for (needle, found) in [
        ("ΟΔΟΣ Athens", greek),
        ("ΟΔΟΣ", greek),
        ("οδος", greek),
        ("οδοσ", greek),
        ("Σ", greek),
        ("ς a", greek),
        ("İstanbul", turkish),
        ("İSTANBUL", turkish),
        ("école", french),
        ("ÉCOLE", french),
        ("STRASSE", german), // no match: ß lowercases to itself, it is not folded to "ss"
        ("STRAßE", german),
        ("straße", german),
    ] {
        let page = client.list(&ListOpportunities::new().title_contains(needle)).await.unwrap();
        let want: Vec<Uuid> = if needle == "STRASSE" { vec![] } else { vec![found] };
        assert_eq!(ids(&page), want, "titleContains {needle:?}: {page:?}");
    }
}

#[tokio::test]
async fn cursors_belong_to_their_query_and_cannot_be_altered() {
    let app = spawn_app().await;
    let token = app.token();
    seed(&app.client(), 5).await;
    let r = call(&app, &token, "opportunity.list", json!({"limit": 2, "stage": ["lead", "won"]})).await;
    let cursor = ok(&r)["nextCursor"].as_str().unwrap().to_string();
    // the same query with another limit and the stages in another order is fine
    ok(&call(&app, &token, "opportunity.list", json!({"limit": 3, "stage": ["won", "lead"], "cursor": cursor})).await);
    for other in [
        json!({"cursor": cursor}),
        json!({"stage": ["lead"], "cursor": cursor}),
        json!({"stage": ["lead", "won"], "order": "asc", "cursor": cursor}),
        json!({"stage": ["lead", "won"], "orderBy": "updatedAt", "cursor": cursor}),
        json!({"stage": ["lead", "won"], "cursor": format!("{cursor}x")}),
        json!({"stage": ["lead", "won"], "cursor": cursor.replacen('e', "f", 1)}),
        json!({"stage": ["lead", "won"], "cursor": "garbage"}),
    ] {
        field_errors(&call(&app, &token, "opportunity.list", other.clone()).await, &["cursor"]);
    }
    // another workspace
    let other_ws = token_for(app.user, &[Uuid::new_v4()], ALL_SCOPES);
    let r = call(&app, &other_ws, "opportunity.list", json!({"stage": ["lead", "won"], "cursor": cursor})).await;
    field_errors(&r, &["cursor"]);
    // A cursor of another query is a params problem like the others: reported with them, and
    // before a workspace that is not granted (§4's order).
    let r = call(
        &app,
        &token,
        "opportunity.list",
        json!({"stage": ["lead", "won"], "order": "asc", "limit": 0, "cursor": cursor}),
    )
    .await;
    field_errors(&r, &["cursor", "limit"]);
    let elsewhere = Uuid::new_v4().to_string();
    let r =
        call(&app, &token, "opportunity.list", json!({"stage": ["lead"], "workspaceId": elsewhere, "cursor": cursor}))
            .await;
    field_errors(&r, &["cursor"]);
    // Where a field the cursor is bound to is itself wrong, that field is the problem.
    let r = call(&app, &token, "opportunity.list", json!({"stage": ["lead", "bogus"], "cursor": cursor})).await;
    field_errors(&r, &["stage.1"]);
    assert!(r["error"]["data"]["fieldErrors"].get("cursor").is_none(), "{r}");
}

/// Pages through a list ordered by `field` while, between pages, others create, archive one
/// opportunity, move the ordering value of one already returned (so that it would come again),
/// and change another field of one not yet returned (which must still come).
async fn page_while_changing(client: &Client, field: OrderBy, order: Order) {
    let items = seed(client, 16).await;
    let mut seen: Vec<Uuid> = Vec::new();
    let mut moved = BTreeSet::new();
    let mut archived = BTreeSet::new();
    let mut params = ListOpportunities::new().limit(3).order_by(field).order(order);
    for round in 0.. {
        let page = client.list(&params).await.unwrap();
        seen.extend(ids(&page));
        client.create(new_opportunity("Meanwhile")).await.unwrap();
        if let Some(first) = page.items.first() {
            // Move an opportunity already returned to the far end of the order.
            let o = client.get(first.id).await.unwrap();
            let change = UpdateOpportunity::new(o.id, o.version);
            let change = match (field, order) {
                (OrderBy::CreatedAt | OrderBy::UpdatedAt, _) => change.title(format!("moved {round}")),
                (_, Order::Desc) => {
                    change.expected_close_date(at("1999-01-01T00:00:00Z")).estimated_value(Money::from_cents(1))
                }
                (_, Order::Asc) => change
                    .expected_close_date(at("2199-01-01T00:00:00Z"))
                    .estimated_value(Money::from_units(999_999_999)),
            };
            client.update(change).await.unwrap();
            moved.insert(o.id);
        }
        // Change another field of one not returned yet: it keeps its ordering value (unless the
        // list is ordered by updatedAt) and must still come.
        if let Some(unseen) =
            items.iter().find(|o| !seen.contains(&o.id) && !moved.contains(&o.id) && !archived.contains(&o.id))
        {
            let o = client.get(unseen.id).await.unwrap();
            client.update(UpdateOpportunity::new(o.id, o.version).priority(Priority::High)).await.unwrap();
            if field == OrderBy::UpdatedAt {
                moved.insert(o.id);
            }
        }
        // Archive one not returned yet: it no longer matches, and may be left out.
        if round == 1
            && let Some(victim) = items.iter().rev().find(|o| !seen.contains(&o.id) && !moved.contains(&o.id))
        {
            let o = client.get(victim.id).await.unwrap();
            client.archive(ArchiveOpportunity::new(o.id, o.version)).await.unwrap();
            archived.insert(o.id);
        }
        match page.next_cursor {
            Some(cursor) => params = params.cursor(cursor),
            None => break,
        }
    }
    let unique: BTreeSet<Uuid> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "orderBy {field} {order}: an opportunity came twice: {seen:?}");
    for o in &items {
        if !moved.contains(&o.id) && !archived.contains(&o.id) {
            assert!(
                unique.contains(&o.id),
                "orderBy {field} {order}: {} matched throughout and kept its value, yet was skipped",
                o.id
            );
        }
    }
}

#[tokio::test]
async fn paging_while_others_change_never_repeats_or_skips() {
    for &field in OrderBy::ALL {
        for order in [Order::Desc, Order::Asc] {
            let app = spawn_app().await;
            page_while_changing(&app.client(), field, order).await;
        }
    }
}

#[tokio::test]
async fn new_methods_work_in_batches() {
    let app = spawn_app().await;
    let token = app.token();
    let o = create(&app, &token, json!({})).await;
    let batch = json!([
        request(json!("a"), "opportunity.get", json!({"id": id(&o)})),
        request(json!("b"), "opportunity.update", json!({"id": id(&o), "expectedVersion": 1, "stage": "qualified"})),
        request(json!("c"), "opportunity.list", json!({"limit": 1})),
        request(json!("d"), "opportunity.get", json!({"id": Uuid::new_v4()})),
    ]);
    let (_, answers) = app.post(&batch, &token).await;
    let by_id = |k: &str| answers.as_array().unwrap().iter().find(|a| a["id"] == k).unwrap().clone();
    assert_eq!(ok(&by_id("a"))["id"], o["id"]);
    assert_eq!(ok(&by_id("b"))["stage"], "qualified");
    assert_eq!(ok(&by_id("c"))["items"].as_array().unwrap().len(), 1);
    err(&by_id("d"), -32004, "NOT_FOUND");
}

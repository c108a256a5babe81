//! The lifecycle of CONTRACT.md §8: get, list, update, archive and restore, over real JSON-RPC,
//! on the backend of the run (SQLite, or PostgreSQL with `TEST_DATABASE_URL`).

use std::collections::BTreeSet;

use opportunity_client::{
    ArchiveOpportunity, Archived, ListOpportunities, OpportunityPage, RestoreOpportunity, UpdateOpportunity,
};
use opportunity_service::auth::ALL_SCOPES;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::*;

#[tokio::test]
async fn get_answers_the_stored_opportunity_and_archived_at_is_null() {
    let app = spawn_app().await;
    let token = app.token();
    let created = create(&app, &token, json!({"estimatedValue": 125000.5})).await;
    assert_eq!(created["archivedAt"], Value::Null, "a create answers archivedAt: null");
    let got = call(&app, &token, "opportunity.get", json!({"id": id(&created).to_uppercase()})).await;
    assert_eq!(ok(&got), &created, "get answers what create answered");
    // A one-element array holding the params works too, and so does WebSocket.
    let got = call(&app, &token, "opportunity.get", json!([{"id": id(&created)}])).await;
    assert_eq!(ok(&got), &created);
    let auth = format!("Bearer {token}");
    let ws = app.ws(&[("authorization", &auth)]).await;
    let mut params = jsonrpsee::core::params::ObjectParams::new();
    params.insert("id", id(&created)).unwrap();
    let via_ws: Value = jsonrpsee::core::client::ClientT::request(&ws, "opportunity.get", params).await.unwrap();
    assert_eq!(via_ws, created);
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
    let token = app.token();
    let o = create(
        &app,
        &token,
        json!({"estimatedValue": 10, "priority": "high", "solutionFamilies": ["hvac"], "scopeSummary": "s"}),
    )
    .await;
    let r = call(
        &app,
        &token,
        "opportunity.update",
        json!({"id": id(&o), "expectedVersion": 1, "title": "  New title ", "priority": null,
               "solutionFamilies": null, "estimatedValue": 99.99, "expectedCloseDate": "2027-03-31T19:00:00+02:00"}),
    )
    .await;
    let u = ok(&r);
    assert_eq!(u["version"], 2);
    assert_eq!(u["title"], "New title");
    assert_eq!(u["priority"], Value::Null);
    assert_eq!(u["solutionFamilies"], json!([]));
    assert_eq!(u["estimatedValue"], 99.99);
    assert_eq!(u["expectedCloseDate"], "2027-03-31T17:00:00Z");
    assert_eq!(u["scopeSummary"], "s", "absent fields stay");
    assert_eq!(u["createdAt"], o["createdAt"]);
    assert!(u["updatedAt"].as_str().unwrap() >= o["updatedAt"].as_str().unwrap());
    assert_eq!(ok(&call(&app, &token, "opportunity.get", json!({"id": id(&o)})).await), u, "stored as answered");

    // null for a required field is refused; ownerUserId null goes back to the caller
    let r = call(&app, &token, "opportunity.update", json!({"id": id(&o), "expectedVersion": 2, "title": null})).await;
    field_errors(&r, &["title"]);
    let other_owner = Uuid::new_v4();
    let r = call(
        &app,
        &token,
        "opportunity.update",
        json!({"id": id(&o), "expectedVersion": 2, "ownerUserId": other_owner}),
    )
    .await;
    assert_eq!(ok(&r)["ownerUserId"], other_owner.to_string());
    let r = call(&app, &token, "opportunity.update", json!({"id": id(&o), "expectedVersion": 3, "ownerUserId": null}))
        .await;
    assert_eq!(ok(&r)["ownerUserId"], app.user.to_string());

    // nothing to change
    let r = call(&app, &token, "opportunity.update", json!({"id": id(&o), "expectedVersion": 4})).await;
    let data = err(&r, -32602, "BAD_REQUEST");
    assert!(data["formErrors"][0].as_str().unwrap().contains("nothing to change"), "{r}");

    // a change to the values already stored writes nothing: same version
    let r = call(&app, &token, "opportunity.update", json!({"id": id(&o), "expectedVersion": 4, "title": "New title"}))
        .await;
    assert_eq!(ok(&r)["version"], 4);
    assert_eq!(
        ok(&r)["updatedAt"],
        ok(&call(&app, &token, "opportunity.get", json!({"id": id(&o)})).await)["updatedAt"]
    );
}

#[tokio::test]
async fn an_update_of_every_field_is_stored_and_published_exactly_as_answered() {
    let app = spawn_app().await;
    let token = app.token();
    let o = create(&app, &token, json!({})).await;
    // Every field the update may change, with values whose text a writer could mangle: quotes,
    // backslashes, JSON look-alikes, characters beyond the BMP, the largest exact amount,
    // microseconds.
    let text = "Chiller \"C\" \\ plant {\"a\": [1]} — Ωμέγα 🏢 ünïcødé";
    let every = json!({
        "customerId": Uuid::new_v4(), "primaryContactId": Uuid::new_v4(), "siteId": Uuid::new_v4(),
        "title": text, "stage": "negotiation", "pipelineType": "service_agreement", "source": "referral",
        "estimatedValue": 1_000_000_000_000u64, "expectedCloseDate": "2027-06-30T23:59:59.123456Z",
        "probability": 65, "solutionFamilies": ["hvac_controls", text, "bms"], "scopeSummary": text,
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
    let token = app.token();
    let o = create(&app, &token, json!({"probability": 40})).await;
    let update = |version: i64, fields: Value| {
        let mut params = json!({"id": id(&o), "expectedVersion": version});
        params.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        params
    };
    // won without probability sets 100
    let r = call(&app, &token, "opportunity.update", update(1, json!({"stage": "won"}))).await;
    assert_eq!((ok(&r)["probability"].clone(), ok(&r)["isWon"].clone()), (json!(100), json!(true)));
    // won with probability 50 is refused on probability and in formErrors
    let r = call(&app, &token, "opportunity.update", update(2, json!({"probability": 50}))).await;
    field_errors(&r, &["probability"]);
    assert!(!r["error"]["data"]["formErrors"].as_array().unwrap().is_empty(), "{r}");
    // lost sets 0; lostReasonCategory allowed with lost
    let r =
        call(&app, &token, "opportunity.update", update(2, json!({"stage": "lost", "lostReasonCategory": "price"})))
            .await;
    assert_eq!(ok(&r)["probability"], 0);
    assert_eq!(ok(&r)["isClosed"], true);
    // away from lost without naming lostReasonCategory clears it
    let r = call(&app, &token, "opportunity.update", update(3, json!({"stage": "proposal"}))).await;
    assert_eq!(ok(&r)["lostReasonCategory"], Value::Null);
    assert_eq!(ok(&r)["isClosed"], false);
    assert_eq!(ok(&r)["probability"], 0, "probability stays when leaving lost");
    // lostReasonCategory without lost is refused
    let r = call(&app, &token, "opportunity.update", update(4, json!({"lostReasonCategory": "timing"}))).await;
    field_errors(&r, &["lostReasonCategory"]);
    // away from lost while naming it is refused
    let r = call(&app, &token, "opportunity.update", update(4, json!({"stage": "lost"}))).await;
    ok(&r);
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
    let ids = |page: OpportunityPage| page.items.into_iter().map(|o| o.id).collect::<Vec<_>>();
    assert_eq!(ids(client.list(&ListOpportunities::new()).await.unwrap()), [keep.id]);
    assert_eq!(ids(client.list(&ListOpportunities::new().archived(Archived::Only)).await.unwrap()), [o.id]);
    let all = ids(client.list(&ListOpportunities::new().archived(Archived::Include)).await.unwrap());
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
    let local = create(&app, &in_a, json!({})).await;
    let shared = create(&app, &in_a, json!({"visibilityMode": "shared"})).await;
    let global = create(&app, &in_a, json!({"visibilityMode": "global"})).await;
    let change = |o: &Value| json!({"id": id(o), "expectedVersion": 1, "title": "from b"});
    err(&call(&app, &in_b, "opportunity.update", change(&local)).await, -32004, "NOT_FOUND");
    err(&call(&app, &in_b, "opportunity.update", change(&shared)).await, -32003, "FORBIDDEN");
    err(
        &call(&app, &in_b, "opportunity.archive", json!({"id": id(&shared), "expectedVersion": 1})).await,
        -32003,
        "FORBIDDEN",
    );
    err(&call(&app, &in_b_no_global, "opportunity.update", change(&global)).await, -32003, "FORBIDDEN");
    assert_eq!(ok(&call(&app, &in_b, "opportunity.update", change(&global)).await)["title"], "from b");
    // FORBIDDEN comes before a stale version
    let stale = json!({"id": id(&shared), "expectedVersion": 9, "title": "x"});
    err(&call(&app, &in_b, "opportunity.update", stale).await, -32003, "FORBIDDEN");
    // becoming global needs opportunity:global
    let in_a_no_global = token_for(app.user, &[a], "opportunity:write");
    let r = call(
        &app,
        &in_a_no_global,
        "opportunity.update",
        json!({"id": id(&local), "expectedVersion": 1, "visibilityMode": "global"}),
    )
    .await;
    err(&r, -32003, "FORBIDDEN");
    // include: visible lists shared and global of other workspaces, own does not
    let listed = |r: &Value| -> BTreeSet<String> {
        ok(r)["items"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap().to_string()).collect()
    };
    assert!(listed(&call(&app, &in_b, "opportunity.list", json!({})).await).is_empty());
    let visible = listed(&call(&app, &in_b, "opportunity.list", json!({"include": "visible"})).await);
    assert_eq!(visible, [id(&shared), id(&global)].iter().map(|s| s.to_string()).collect());
}

#[tokio::test]
async fn idempotency_keys_replay_changes_and_share_one_space_with_create() {
    let app = spawn_app().await;
    let token = app.token();
    let o = create(&app, &token, json!({"idempotencyKey": "k-create"})).await;
    let params = json!({"id": id(&o), "expectedVersion": 1, "title": "renamed", "idempotencyKey": "k-update"});
    let first = call(&app, &token, "opportunity.update", params.clone()).await;
    let again = call(&app, &token, "opportunity.update", params.clone()).await;
    assert_eq!(ok(&first), ok(&again), "a replay answers the first answer");
    let stored = call(&app, &token, "opportunity.get", json!({"id": id(&o)})).await;
    assert_eq!(ok(&stored)["version"], 2, "the replay wrote nothing");
    let other = json!({"id": id(&o), "expectedVersion": 2, "title": "other", "idempotencyKey": "k-update"});
    let r = call(&app, &token, "opportunity.update", other).await;
    assert_eq!(err(&r, -32009, "CONFLICT")["reason"], "idempotency_key_reused");
    // the create's key cannot be reused by an archive
    let r = call(
        &app,
        &token,
        "opportunity.archive",
        json!({"id": id(&o), "expectedVersion": 2, "idempotencyKey": "k-create"}),
    )
    .await;
    assert_eq!(err(&r, -32009, "CONFLICT")["reason"], "idempotency_key_reused");
    // the header works too, and must agree with the field
    let auth = format!("Bearer {token}");
    let body = request(json!(1), "opportunity.archive", json!({"id": id(&o), "expectedVersion": 2})).to_string();
    let (_, a1) = app.post_raw(body.clone(), &[("authorization", &auth), ("idempotency-key", "k-archive")]).await;
    let (_, a2) = app.post_raw(body, &[("authorization", &auth), ("idempotency-key", "k-archive")]).await;
    assert_eq!(ok(&a1), ok(&a2));
    let body =
        request(json!(1), "opportunity.restore", json!({"id": id(&o), "expectedVersion": 3, "idempotencyKey": "a"}))
            .to_string();
    let (_, r) = app.post_raw(body, &[("authorization", &auth), ("idempotency-key", "b")]).await;
    field_errors(&r, &["idempotencyKey"]);
}

/// Creates opportunities with the given (expectedCloseDate, estimatedValue) and returns them.
async fn seed(app: &TestApp, token: &str, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..n {
        // Repeated and missing values, so that ties and nulls are exercised.
        let close = if i % 4 == 3 { Value::Null } else { json!(format!("2027-0{}-01T00:00:00Z", 1 + i % 3)) };
        let value = if i % 5 == 4 { Value::Null } else { json!((i % 3) as f64 * 1000.5) };
        let stage = ["lead", "proposal", "won"][i % 3];
        let title = format!("Chiller {} {}", ["A%", "b_", "C\\"][i % 3], i);
        out.push(
            create(
                app,
                token,
                json!({"expectedCloseDate": close, "estimatedValue": value, "stage": stage, "title": title}),
            )
            .await,
        );
    }
    out
}

/// Follows `nextCursor` from the first page; returns every id in order.
async fn all_pages(app: &TestApp, token: &str, params: Value, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut p = params.clone();
        p["limit"] = json!(limit);
        if let Some(c) = &cursor {
            p["cursor"] = json!(c);
        }
        let r = call(app, token, "opportunity.list", p).await;
        let page = ok(&r);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= limit);
        ids.extend(items.iter().map(|o| o["id"].as_str().unwrap().to_string()));
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return ids,
        }
    }
    panic!("more than 100 pages");
}

fn expected_order(items: &[Value], field: &str, descending: bool) -> Vec<String> {
    let mut sorted: Vec<&Value> = items.iter().collect();
    let key = |o: &Value| -> Option<String> {
        match &o[field] {
            Value::Null => None,
            Value::Number(n) => Some(format!("{:020.2}", n.as_f64().unwrap())),
            Value::String(s) => Some(s.clone()),
            other => panic!("{other}"),
        }
    };
    sorted.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        let by_value = match (&ka, &kb) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(_), None) => std::cmp::Ordering::Less,
            (Some(x), Some(y)) => {
                if descending {
                    y.cmp(x)
                } else {
                    x.cmp(y)
                }
            }
        };
        let by_id =
            if descending { b["id"].as_str().cmp(&a["id"].as_str()) } else { a["id"].as_str().cmp(&b["id"].as_str()) };
        by_value.then(by_id)
    });
    sorted.iter().map(|o| o["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn list_orders_totally_with_nulls_last_and_pages_without_repeats() {
    let app = spawn_app().await;
    let token = app.token();
    let items = seed(&app, &token, 23).await;
    for field in ["createdAt", "updatedAt", "expectedCloseDate", "estimatedValue"] {
        for (order, descending) in [("desc", true), ("asc", false)] {
            let want = expected_order(&items, field, descending);
            for limit in [1, 4, 50] {
                let got = all_pages(&app, &token, json!({"orderBy": field, "order": order}), limit).await;
                assert_eq!(got, want, "orderBy {field} {order}, limit {limit}");
            }
        }
    }
    // the defaults are createdAt desc, 50
    let r = call(&app, &token, "opportunity.list", json!({})).await;
    let ids: Vec<String> =
        ok(&r)["items"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, expected_order(&items, "createdAt", true));
    assert_eq!(ok(&r)["nextCursor"], Value::Null);
}

#[tokio::test]
async fn list_filters_match_the_contract() {
    let app = spawn_app().await;
    let token = app.token();
    let items = seed(&app, &token, 12).await;
    let ids_of = |r: &Value| -> BTreeSet<String> {
        ok(r)["items"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap().to_string()).collect()
    };
    let want = |pred: &dyn Fn(&Value) -> bool| -> BTreeSet<String> {
        items.iter().filter(|o| pred(o)).map(|o| o["id"].as_str().unwrap().to_string()).collect()
    };
    type Case<'a> = (Value, Box<dyn Fn(&Value) -> bool + 'a>);
    let cases: Vec<Case> = vec![
        (json!({"stage": ["won", "lead"]}), Box::new(|o| o["stage"] == "won" || o["stage"] == "lead")),
        (json!({"stage": []}), Box::new(|_| false)),
        (json!({"isClosed": true}), Box::new(|o| o["isClosed"] == true)),
        (json!({"isClosed": false}), Box::new(|o| o["isClosed"] == false)),
        (json!({"pipelineType": ["retrofit"]}), Box::new(|_| true)),
        (json!({"pipelineType": ["other"]}), Box::new(|_| false)),
        (json!({"customerId": "550E8400-E29B-41D4-A716-446655440000"}), Box::new(|_| true)),
        (json!({"ownerUserId": Uuid::new_v4()}), Box::new(|_| false)),
        (
            json!({"expectedCloseFrom": "2027-02-01T00:00:00Z", "expectedCloseTo": "2027-03-01T00:00:00+00:00"}),
            Box::new(|o| o["expectedCloseDate"] == "2027-02-01T00:00:00Z"),
        ),
        (json!({"titleContains": "a%"}), Box::new(|o| o["title"].as_str().unwrap().contains("A%"))),
        (json!({"titleContains": "B_"}), Box::new(|o| o["title"].as_str().unwrap().contains("b_"))),
        (json!({"titleContains": "c\\"}), Box::new(|o| o["title"].as_str().unwrap().contains("C\\"))),
        (json!({"titleContains": "%"}), Box::new(|o| o["title"].as_str().unwrap().contains('%'))),
        (json!({"titleContains": "_"}), Box::new(|o| o["title"].as_str().unwrap().contains('_'))),
        (
            json!({"updatedSince": items[5]["updatedAt"]}),
            Box::new(|o| o["updatedAt"].as_str() >= items[5]["updatedAt"].as_str()),
        ),
    ];
    for (params, pred) in cases {
        let r = call(&app, &token, "opportunity.list", params.clone()).await;
        assert_eq!(ids_of(&r), want(&*pred), "{params}");
    }
    // Unicode case folding
    let accented = create(&app, &token, json!({"title": "Éclairage CAFÉ"})).await;
    let r = call(&app, &token, "opportunity.list", json!({"titleContains": "café"})).await;
    assert_eq!(ids_of(&r), [id(&accented).to_string()].into());
}

/// `titleContains` ignores case beyond ASCII the same way on both backends, and on PostgreSQL
/// whatever the database's locale: here one created with `LC_CTYPE 'C'`, whose own `lower()`
/// knows ASCII only.
#[tokio::test]
async fn title_contains_ignores_case_beyond_ascii_whatever_the_database_locale() {
    let db = TestDatabase::with_options("TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'");
    let app = spawn_app_on(db, &[]).await;
    let token = app.token();
    let greek = id(&create(&app, &token, json!({"title": "ΟΔΟΣ Athens"})).await).to_string();
    let turkish = id(&create(&app, &token, json!({"title": "İstanbul depot"})).await).to_string();
    let french = id(&create(&app, &token, json!({"title": "ÉCOLE Chiller"})).await).to_string();
    let german = id(&create(&app, &token, json!({"title": "Straße 5 fire panel"})).await).to_string();
    for (needle, found) in [
        ("ΟΔΟΣ Athens", &greek),
        ("ΟΔΟΣ", &greek),
        ("οδος", &greek),
        ("οδοσ", &greek),
        ("Σ", &greek),
        ("ς a", &greek),
        ("İstanbul", &turkish),
        ("İSTANBUL", &turkish),
        ("école", &french),
        ("ÉCOLE", &french),
        ("STRASSE", &german), // no match: ß lowercases to itself, it is not folded to "ss"
        ("STRAßE", &german),
        ("straße", &german),
    ] {
        let r = call(&app, &token, "opportunity.list", json!({"titleContains": needle})).await;
        let ids_of = |r: &Value| -> BTreeSet<String> {
            ok(r)["items"].as_array().unwrap().iter().map(|o| id(o).to_string()).collect()
        };
        let want: BTreeSet<String> = if needle == "STRASSE" { BTreeSet::new() } else { [found.clone()].into() };
        assert_eq!(ids_of(&r), want, "titleContains {needle:?}: {r}");
    }
}

#[tokio::test]
async fn cursors_belong_to_their_query_and_cannot_be_altered() {
    let app = spawn_app().await;
    let token = app.token();
    seed(&app, &token, 5).await;
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
async fn page_while_changing(app: &TestApp, token: &str, field: &str, order: &str) {
    let items = seed(app, token, 16).await;
    let mut seen: Vec<String> = Vec::new();
    let mut moved = BTreeSet::new();
    let mut archived = BTreeSet::new();
    let mut cursor: Option<String> = None;
    let version = |o: &Value| o["version"].as_i64().unwrap();
    for round in 0.. {
        let mut p = json!({"limit": 3, "orderBy": field, "order": order});
        if let Some(c) = &cursor {
            p["cursor"] = json!(c);
        }
        let r = call(app, token, "opportunity.list", p).await;
        let page: Vec<String> = ok(&r)["items"].as_array().unwrap().iter().map(|o| id(o).to_string()).collect();
        seen.extend(page.iter().cloned());
        create(app, token, json!({})).await;
        let get = |i: &str| {
            let i = i.to_string();
            async move { ok(&call(app, token, "opportunity.get", json!({"id": i})).await).clone() }
        };
        if let Some(first) = page.first() {
            // Move an opportunity already returned to the far end of the order.
            let o = get(first).await;
            let far = if order == "desc" {
                json!({"expectedCloseDate": "1999-01-01T00:00:00Z", "estimatedValue": 0.01})
            } else {
                json!({"expectedCloseDate": "2199-01-01T00:00:00Z", "estimatedValue": 999999999})
            };
            let mut params = json!({"id": id(&o), "expectedVersion": version(&o)});
            params.as_object_mut().unwrap().extend(far.as_object().unwrap().clone());
            if field == "updatedAt" || field == "createdAt" {
                params = json!({"id": id(&o), "expectedVersion": version(&o), "title": format!("moved {round}")});
            }
            ok(&call(app, token, "opportunity.update", params).await);
            moved.insert(id(&o).to_string());
        }
        // Change another field of one not returned yet: it keeps its ordering value (unless the
        // list is ordered by updatedAt) and must still come.
        if let Some(unseen) = items
            .iter()
            .find(|o| !seen.contains(&id(o).to_string()) && !moved.contains(id(o)) && !archived.contains(id(o)))
        {
            let o = get(id(unseen)).await;
            ok(&call(
                app,
                token,
                "opportunity.update",
                json!({"id": id(&o), "expectedVersion": version(&o), "priority": "high"}),
            )
            .await);
            if field == "updatedAt" {
                moved.insert(id(&o).to_string());
            }
        }
        // Archive one not returned yet: it no longer matches, and may be left out.
        if round == 1
            && let Some(victim) =
                items.iter().rev().find(|o| !seen.contains(&id(o).to_string()) && !moved.contains(id(o)))
        {
            let o = get(id(victim)).await;
            ok(&call(app, token, "opportunity.archive", json!({"id": id(&o), "expectedVersion": version(&o)})).await);
            archived.insert(id(&o).to_string());
        }
        match ok(&r)["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "orderBy {field} {order}: an opportunity came twice: {seen:?}");
    for o in &items {
        let o = id(o).to_string();
        if !moved.contains(&o) && !archived.contains(&o) {
            assert!(
                unique.contains(&o),
                "orderBy {field} {order}: {o} matched throughout and kept its value, yet was skipped"
            );
        }
    }
}

#[tokio::test]
async fn paging_while_others_change_never_repeats_or_skips() {
    for field in ["createdAt", "updatedAt", "expectedCloseDate", "estimatedValue"] {
        for order in ["desc", "asc"] {
            let app = spawn_app().await;
            page_while_changing(&app, &app.token(), field, order).await;
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

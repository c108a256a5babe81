//! The input rules of `opportunity.create` (CONTRACT.md §5) and the error envelope of its refusals
//! (§4, §7): each rule from both sides, accepted and refused, over HTTP against the real service.

use diesel::{QueryDsl, RunQueryDsl};
use opportunity_service::db::{DbConn, DbError};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::*;

// ---------------------------------------------------------------------------------------------
// Helpers of this file
// ---------------------------------------------------------------------------------------------

/// Every input field of the seed's table.
const SEED_FIELDS: [&str; 24] = [
    "customerId",
    "primaryContactId",
    "siteId",
    "title",
    "stage",
    "pipelineType",
    "source",
    "estimatedValue",
    "expectedCloseDate",
    "probability",
    "solutionFamilies",
    "scopeSummary",
    "competitorNotes",
    "winLossReason",
    "nextStepDescription",
    "nextStepDate",
    "bidDueDate",
    "budgetConfirmed",
    "priority",
    "lostReasonCategory",
    "technicalRequirements",
    "ownerUserId",
    "workspaceId",
    "visibilityMode",
];

/// What the answer has beyond the input fields.
const SERVER_FIELDS: [&str; 8] =
    ["id", "createdBy", "createdAt", "updatedAt", "version", "isClosed", "isWon", "archivedAt"];

/// The optional fields: absent and `null` mean "not set".
const OPTIONAL_FIELDS: [&str; 17] = [
    "primaryContactId",
    "siteId",
    "source",
    "estimatedValue",
    "expectedCloseDate",
    "probability",
    "solutionFamilies",
    "scopeSummary",
    "competitorNotes",
    "winLossReason",
    "nextStepDescription",
    "nextStepDate",
    "bidDueDate",
    "priority",
    "lostReasonCategory",
    "technicalRequirements",
    "ownerUserId",
];

const UUID_FIELDS: [&str; 5] = ["customerId", "primaryContactId", "siteId", "ownerUserId", "workspaceId"];

const DATE_FIELDS: [&str; 3] = ["expectedCloseDate", "nextStepDate", "bidDueDate"];

const TEXT_FIELDS: [&str; 5] =
    ["scopeSummary", "competitorNotes", "winLossReason", "nextStepDescription", "technicalRequirements"];

const STAGES: [&str; 7] = ["lead", "qualified", "survey", "proposal", "negotiation", "won", "lost"];

/// Each enum field with exactly the seed's values.
const ENUMS: [(&str, &[&str]); 6] = [
    ("stage", &STAGES),
    ("pipelineType", &["new_construction", "retrofit", "service_agreement", "expansion", "other"]),
    (
        "source",
        &["referral", "website", "cold_call", "existing_customer", "partner", "trade_show", "portal_request", "other"],
    ),
    ("priority", &["low", "medium", "high", "urgent"]),
    (
        "lostReasonCategory",
        &["price", "timing", "competitor", "scope_mismatch", "no_decision", "relationship", "other"],
    ),
    ("visibilityMode", &["global", "workspace_local", "shared"]),
];

/// `valid_params()` with the given fields set.
fn with(fields: &[(&str, Value)]) -> Value {
    let mut params = valid_params();
    for (name, value) in fields {
        params[*name] = value.clone();
    }
    params
}

/// `valid_params()` without one field.
fn without(field: &str) -> Value {
    let mut params = valid_params();
    params.as_object_mut().unwrap().remove(field);
    params
}

/// Creates and expects success; returns `result`.
async fn accept(app: &TestApp, params: Value) -> Value {
    let response = app.create(params.clone()).await;
    assert!(
        response.get("error").is_none() && response["result"].is_object(),
        "expected the service to accept {params}\ngot {response}"
    );
    response["result"].clone()
}

/// Checks the §4 envelope of a validation error; returns `error.data`.
fn invalid_params<'a>(response: &'a Value, sent: &Value) -> &'a Value {
    assert!(response.get("result").is_none(), "expected the service to refuse {sent}\ngot {response}");
    let error = &response["error"];
    assert_eq!(error["code"], -32602, "sent {sent}\ngot {response}");
    assert_eq!(error["message"], "Invalid params", "{response}");
    assert_eq!(error["data"]["code"], "BAD_REQUEST", "{response}");
    assert_eq!(error["data"]["httpStatus"], 400, "{response}");
    assert!(error["data"]["fieldErrors"].is_object(), "{response}");
    assert!(error["data"]["formErrors"].is_array(), "{response}");
    &error["data"]
}

/// Creates and expects a validation error; returns `error.data`.
async fn refuse(app: &TestApp, params: Value) -> Value {
    let response = app.create(params.clone()).await;
    invalid_params(&response, &params).clone()
}

/// The messages of `fieldErrors[field]`, which must be a non-empty list of non-empty strings.
fn field_errors(data: &Value, field: &str) -> Vec<String> {
    let list =
        data["fieldErrors"][field].as_array().unwrap_or_else(|| panic!("expected fieldErrors.{field}, got {data}"));
    assert!(!list.is_empty(), "fieldErrors.{field} is empty: {data}");
    list.iter()
        .map(|m| {
            let m = m.as_str().unwrap_or_else(|| panic!("not a string: {m}"));
            assert!(!m.trim().is_empty(), "empty message in {data}");
            m.to_string()
        })
        .collect()
}

/// The keys of `fieldErrors`, sorted.
fn field_error_keys(data: &Value) -> Vec<String> {
    let mut keys: Vec<String> = data["fieldErrors"]
        .as_object()
        .unwrap_or_else(|| panic!("fieldErrors is not an object: {data}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// `formErrors` as strings.
fn form_errors(data: &Value) -> Vec<String> {
    data["formErrors"]
        .as_array()
        .unwrap_or_else(|| panic!("formErrors is not an array: {data}"))
        .iter()
        .map(|m| m.as_str().expect("formErrors holds strings").to_string())
        .collect()
}

/// Creates params whose only problem is `field`: refused with errors on that field alone.
async fn refuse_on(app: &TestApp, params: Value, field: &str) -> Vec<String> {
    let data = refuse(app, params.clone()).await;
    assert_eq!(field_error_keys(&data), [field], "sent {params}, expected errors on {field} only");
    field_errors(&data, field)
}

/// Posts `opportunity.create` with `params` given as raw JSON text (for exact number literals).
async fn create_raw(app: &TestApp, params: &str) -> Value {
    let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"opportunity.create","params":{params}}}"#);
    let auth = format!("Bearer {}", app.token());
    app.post_raw(body, &[("authorization", &auth)]).await.1
}

/// Raw params text: the valid minimal params plus `"estimatedValue": <literal>`.
fn params_with_estimated_value(literal: &str) -> String {
    format!(
        r#"{{"customerId":"550e8400-e29b-41d4-a716-446655440000","title":"Chiller","pipelineType":"retrofit","estimatedValue":{literal}}}"#
    )
}

/// The stored estimated value of opportunity `id` as a decimal text with two places
/// (`"125000.50"`): both backends keep integer cents.
async fn stored_estimated_value(app: &TestApp, id: &str) -> Option<String> {
    use opportunity_service::db::schema::opportunities as t;
    use opportunity_service::db::types::Id;
    let db = app.db.open();
    let id = Id(Uuid::parse_str(id).expect("a uuid"));
    let query = move || t::table.find(id).select(t::estimated_value_cents);
    let cents: Option<i64> = db
        .run(move |conn| {
            match conn {
                DbConn::Sqlite(c) => query().first(c),
                DbConn::Postgres(c) => query().first(c),
            }
            .map_err(DbError::from)
        })
        .await
        .expect("read the stored value");
    cents.map(|cents| format!("{}.{:02}", cents / 100, cents % 100))
}

// ---------------------------------------------------------------------------------------------
// Required fields, defaults, optional fields
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn required_fields_without_default_are_field_errors_when_absent() {
    let app = spawn_app().await;
    for field in ["customerId", "title", "pipelineType"] {
        refuse_on(&app, without(field), field).await;
    }
    // All three at once: every one reported.
    let data = refuse(&app, json!({})).await;
    for field in ["customerId", "title", "pipelineType"] {
        field_errors(&data, field);
    }
    // And the minimal params with all three are accepted.
    accept(&app, valid_params()).await;
}

#[tokio::test]
async fn null_is_refused_for_every_required_field() {
    let app = spawn_app().await;
    for field in ["customerId", "title", "pipelineType", "stage", "budgetConfirmed", "visibilityMode"] {
        refuse_on(&app, with(&[(field, Value::Null)]), field).await;
    }
}

#[tokio::test]
async fn defaults_apply_when_absent_and_explicit_values_are_kept() {
    let app = spawn_app().await;
    let result = accept(&app, valid_params()).await;
    assert_eq!(result["stage"], "lead", "{result}");
    assert_eq!(result["budgetConfirmed"], false, "{result}");
    assert_eq!(result["visibilityMode"], "workspace_local", "{result}");

    let result = accept(
        &app,
        with(&[("stage", json!("qualified")), ("budgetConfirmed", json!(true)), ("visibilityMode", json!("shared"))]),
    )
    .await;
    assert_eq!(result["stage"], "qualified", "{result}");
    assert_eq!(result["budgetConfirmed"], true, "{result}");
    assert_eq!(result["visibilityMode"], "shared", "{result}");
}

#[tokio::test]
async fn budget_confirmed_must_be_a_boolean() {
    let app = spawn_app().await;
    assert_eq!(accept(&app, with(&[("budgetConfirmed", json!(false))])).await["budgetConfirmed"], false);
    for bad in [json!("true"), json!(1), json!(0), json!([]), json!({})] {
        refuse_on(&app, with(&[("budgetConfirmed", bad)]), "budgetConfirmed").await;
    }
}

#[tokio::test]
async fn optional_fields_absent_and_null_mean_the_same() {
    let app = spawn_app().await;
    let absent = accept(&app, valid_params()).await;
    let nulls: Vec<(&str, Value)> = OPTIONAL_FIELDS.iter().map(|f| (*f, Value::Null)).collect();
    let null = accept(&app, with(&nulls)).await;

    for field in OPTIONAL_FIELDS {
        assert_eq!(absent[field], null[field], "{field}: absent vs null");
    }
    for field in OPTIONAL_FIELDS {
        match field {
            "solutionFamilies" => assert_eq!(null[field], json!([]), "{null}"),
            // Not set: the caller, as §5 defaults it.
            "ownerUserId" => assert_eq!(null[field], app.user.to_string(), "{null}"),
            _ => assert_eq!(null[field], Value::Null, "{field} in {null}"),
        }
    }
    // workspaceId: null means "not named", so the token's only workspace.
    let result = accept(&app, with(&[("workspaceId", Value::Null)])).await;
    assert_eq!(result["workspaceId"], app.workspace.to_string(), "{result}");
}

// ---------------------------------------------------------------------------------------------
// Unknown fields, several problems at once, the envelope
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_fields_are_each_named_in_form_errors() {
    let app = spawn_app().await;
    let params = with(&[
        ("pipeline_type", json!("retrofit")),
        ("foo", json!(1)),
        ("Title", json!("x")),
        ("customerID", Value::Null),
    ]);
    let data = refuse(&app, params).await;
    let form = form_errors(&data);
    for name in ["pipeline_type", "foo", "Title", "customerID"] {
        let expected = format!("unknown field \"{name}\"");
        assert!(form.contains(&expected), "{expected} missing in {data}");
    }
    assert_eq!(form.len(), 4, "one entry per unknown field: {data}");
    assert_eq!(field_error_keys(&data), Vec::<String>::new(), "{data}");
    // The known fields alone are fine.
    accept(&app, valid_params()).await;
    // However many a caller sends by mistake: each one is named.
    let many: Vec<(String, Value)> = (0..300).map(|i| (format!("u{i}"), json!(i))).collect();
    let many: Vec<(&str, Value)> = many.iter().map(|(name, value)| (name.as_str(), value.clone())).collect();
    let data = refuse(&app, with(&many)).await;
    let form = form_errors(&data);
    assert_eq!(form.len(), 300, "{data}");
    assert!(form.contains(&"unknown field \"u299\"".to_string()), "{data}");
}

/// An array of solution families over its 50 items has each item's problems reported with its
/// count, every problem at once.
#[tokio::test]
async fn solution_families_over_the_limit_report_their_items_problems_too() {
    let app = spawn_app().await;
    let mut items = vec![json!(""), json!("HVAC"), json!(" HVAC ")];
    items.extend((0..48).map(|i| json!(format!("family {i}"))));
    let data = refuse(&app, with(&[("solutionFamilies", json!(items))])).await;
    assert_eq!(field_error_keys(&data), ["solutionFamilies", "solutionFamilies.0", "solutionFamilies.2"], "{data}");
    assert_eq!(field_errors(&data, "solutionFamilies"), ["must have at most 50 items"]);
    assert_eq!(field_errors(&data, "solutionFamilies.2"), ["must not repeat item 1"]);
    // The same on an update.
    let token = app.token();
    let o = create(&app, &token, json!({})).await;
    let params = json!({"id": o["id"], "expectedVersion": 1, "solutionFamilies": items});
    let answer = call(&app, &token, "opportunity.update", params.clone()).await;
    let data = invalid_params(&answer, &params);
    assert_eq!(field_error_keys(data), ["solutionFamilies", "solutionFamilies.0", "solutionFamilies.2"], "{data}");
    // An item that is not even a string: the count is still said once.
    items[0] = json!(7);
    let data = refuse(&app, with(&[("solutionFamilies", json!(items))])).await;
    assert_eq!(field_errors(&data, "solutionFamilies"), ["must have at most 50 items"], "{data}");
    assert!(field_error_keys(&data).contains(&"solutionFamilies.0".to_string()), "{data}");
}

#[tokio::test]
async fn refused_example_of_the_contract_has_the_exact_envelope() {
    let app = spawn_app().await;
    let params = json!({
        "customerId": "550e8400-e29b-41d4-a716-446655440000",
        "title": "",
        "pipelineType": "retrofit",
        "probability": 101,
        "pipeline_type": "retrofit",
    });
    let (_, response) = app.post(&request(json!(2), "opportunity.create", params), &app.token()).await;
    assert_eq!(
        response,
        json!({"jsonrpc":"2.0","id":2,"error":{"code":-32602,"message":"Invalid params",
            "data":{"code":"BAD_REQUEST","httpStatus":400,
                    "fieldErrors":{"title":["must not be empty"],"probability":["must be between 0 and 100"]},
                    "formErrors":["unknown field \"pipeline_type\""]}}})
    );
}

#[tokio::test]
async fn every_problem_of_a_call_is_reported_at_once() {
    let app = spawn_app().await;
    let params = json!({
        "customerId": "nope",
        "title": "   ",
        "stage": "Won",
        "source": "internet",
        "estimatedValue": -5,
        "probability": 50.5,
        "expectedCloseDate": "2026-12-01",
        "solutionFamilies": ["HVAC", "HVAC"],
        "budgetConfirmed": "yes",
        "extra": true,
        "another": null,
    });
    let data = refuse(&app, params).await;
    for field in [
        "customerId",
        "title",
        "stage",
        "pipelineType",
        "source",
        "estimatedValue",
        "probability",
        "expectedCloseDate",
        "solutionFamilies.1",
        "budgetConfirmed",
    ] {
        field_errors(&data, field);
    }
    let form = form_errors(&data);
    assert!(form.contains(&"unknown field \"extra\"".to_string()), "{data}");
    assert!(form.contains(&"unknown field \"another\"".to_string()), "{data}");
}

// ---------------------------------------------------------------------------------------------
// UUIDs
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn uuid_fields_accept_any_case_and_return_lowercase_hyphenated() {
    let app = spawn_app().await;
    let customer = "550E8400-E29B-41D4-A716-446655440000";
    let contact = "aBcDeF01-2345-4678-9aBc-DeF012345678";
    let site = "FFFFFFFF-0000-4000-8000-00000000000A";
    let owner = "7D3F9A52-1C1E-4A8E-9A53-2B7C3D4E5F60";
    let workspace = app.workspace.to_string().to_uppercase();
    let result = accept(
        &app,
        with(&[
            ("customerId", json!(customer)),
            ("primaryContactId", json!(contact)),
            ("siteId", json!(site)),
            ("ownerUserId", json!(owner)),
            ("workspaceId", json!(workspace)),
        ]),
    )
    .await;
    assert_eq!(result["customerId"], customer.to_lowercase(), "{result}");
    assert_eq!(result["primaryContactId"], contact.to_lowercase(), "{result}");
    assert_eq!(result["siteId"], site.to_lowercase(), "{result}");
    assert_eq!(result["ownerUserId"], owner.to_lowercase(), "{result}");
    assert_eq!(result["workspaceId"], app.workspace.to_string(), "{result}");

    // Lowercase input stays as it is.
    let result = accept(&app, with(&[("primaryContactId", json!(contact.to_lowercase()))])).await;
    assert_eq!(result["primaryContactId"], contact.to_lowercase(), "{result}");
}

#[tokio::test]
async fn uuid_fields_refuse_non_uuid_strings_and_non_strings() {
    let app = spawn_app().await;
    let bad_values = [
        json!("not-a-uuid"),
        json!(""),
        json!("550e8400-e29b-41d4-a716-44665544000"),
        json!("550e8400-e29b-41d4-a716-4466554400000"),
        json!("550e8400-e29b-41d4-a716-44665544000g"),
        json!("550e8400-e29b-41d4-a716_446655440000"),
        json!(42),
        json!(true),
        json!({}),
        json!(["550e8400-e29b-41d4-a716-446655440000"]),
    ];
    for field in UUID_FIELDS {
        for bad in &bad_values {
            refuse_on(&app, with(&[(field, bad.clone())]), field).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Title
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn title_is_trimmed_and_accepted_from_1_to_200_characters() {
    let app = spawn_app().await;
    let cases = [
        ("  Chiller retrofit  ".to_string(), "Chiller retrofit".to_string()),
        ("\t\n Chiller \r\n".to_string(), "Chiller".to_string()),
        ("x".to_string(), "x".to_string()),
        ("x".repeat(200), "x".repeat(200)),
        // 200 two-byte characters: characters count, not bytes.
        ("é".repeat(200), "é".repeat(200)),
        // 200 characters once trimmed.
        (format!("   {}   ", "é".repeat(200)), "é".repeat(200)),
    ];
    for (sent, expected) in cases {
        let result = accept(&app, with(&[("title", json!(sent))])).await;
        assert_eq!(result["title"], expected, "sent {sent:?}");
    }
}

#[tokio::test]
async fn title_empty_blank_too_long_or_not_a_string_is_refused() {
    let app = spawn_app().await;
    let messages = refuse_on(&app, with(&[("title", json!(""))]), "title").await;
    assert_eq!(messages, ["must not be empty"], "the §7 message");
    for bad in [
        json!("   "),
        json!("\t\n\r "),
        json!("x".repeat(201)),
        json!("é".repeat(201)),
        json!(format!(" {} ", "x".repeat(201))),
        json!(42),
        json!(true),
        json!(["title"]),
        json!({"text": "title"}),
    ] {
        refuse_on(&app, with(&[("title", bad)]), "title").await;
    }
}

/// What shows nothing is no title: white space and invisible characters (zero-width space, byte
/// order mark, bidirectional controls) are trimmed from both ends, control characters are
/// refused anywhere, and a title must keep one visible character. Lengths count Unicode scalar
/// values (code points), as the answer holds them.
#[tokio::test]
async fn title_and_solution_families_refuse_invisible_only_text_and_control_characters() {
    let app = spawn_app().await;
    for blank in
        ["\u{200b}", "\u{feff}", "\u{202e}", "\u{200b}\u{feff}\u{202e}", "\u{00a0}\u{3000}\u{2060}", " \u{200d} "]
    {
        let messages = refuse_on(&app, with(&[("title", json!(blank))]), "title").await;
        assert_eq!(messages, ["must not be empty"], "title {blank:?}");
        let data = refuse(&app, with(&[("solutionFamilies", json!(["HVAC", blank]))])).await;
        assert_eq!(field_error_keys(&data), ["solutionFamilies.1"], "solution family {blank:?}: {data}");
        assert_eq!(field_errors(&data, "solutionFamilies.1"), ["must not be empty"]);
    }
    let control = "must not contain control characters (such as tab or line feed)";
    for bad in ["Chiller\tretrofit", "Chiller\nretrofit", "Chiller\u{1b}[2J", "Chiller\u{7f}", "Chiller\u{85}x", "A\rB"]
    {
        assert_eq!(refuse_on(&app, with(&[("title", json!(bad))]), "title").await, [control], "title {bad:?}");
        let data = refuse(&app, with(&[("solutionFamilies", json!([bad]))])).await;
        assert_eq!(field_errors(&data, "solutionFamilies.0"), [control], "solution family {bad:?}");
    }
    let result = accept(
        &app,
        with(&[
            ("title", json!("\u{feff}\u{200b} Chiller retrofit\u{00a0}\u{202e}\n")),
            ("solutionFamilies", json!(["\u{200b}HVAC\u{200b}", "Fire\u{00a0}safety"])),
        ]),
    )
    .await;
    assert_eq!(result["title"], "Chiller retrofit", "invisible ends trimmed: {result}");
    assert_eq!(result["solutionFamilies"], json!(["HVAC", "Fire\u{00a0}safety"]), "inside, a no-break space stays");
    let data = refuse(&app, with(&[("solutionFamilies", json!(["HVAC", "HVAC\u{feff}"]))])).await;
    assert_eq!(field_errors(&data, "solutionFamilies.1"), ["must not repeat item 0"], "equal once trimmed");
    // Joiners inside stay: they are part of emoji and of some scripts.
    let family = "\u{1F468}\u{200D}\u{1F527} crew";
    assert_eq!(accept(&app, with(&[("title", json!(family))])).await["title"], family);
    // Characters are Unicode scalar values: 200 emoji or 200 combining sequences' code points fit.
    let emoji = "\u{1F600}".repeat(200);
    assert_eq!(accept(&app, with(&[("title", json!(emoji))])).await["title"], emoji);
    let combining = "e\u{301}".repeat(100);
    assert_eq!(accept(&app, with(&[("title", json!(combining))])).await["title"], combining);
    let too_long = "e\u{301}".repeat(100) + "x";
    let messages = refuse_on(&app, with(&[("title", json!(too_long))]), "title").await;
    assert_eq!(messages, ["must be at most 200 characters"]);
}

/// Long free texts keep tab, line feed and carriage return; other control characters (escape
/// sequences, bell, C1 controls) are refused.
#[tokio::test]
async fn text_fields_allow_tab_and_newlines_but_no_other_control_characters() {
    let app = spawn_app().await;
    let text = "Line 1\r\n\tLine 2\n";
    for field in TEXT_FIELDS {
        assert_eq!(accept(&app, with(&[(field, json!(text))])).await[field], text, "{field}");
        for bad in ["\u{1b}[31mred", "bell\u{7}", "C1\u{9b}", "del\u{7f}", "\u{c}form feed"] {
            let messages = refuse_on(&app, with(&[(field, json!(bad))]), field).await;
            assert_eq!(
                messages,
                ["must not contain control characters other than tab, line feed and carriage return"],
                "{field}: {bad:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Enums
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn enums_accept_every_seed_value() {
    let app = spawn_app().await;
    for (field, values) in ENUMS {
        for value in values {
            let mut params = with(&[(field, json!(value))]);
            if field == "lostReasonCategory" {
                params["stage"] = json!("lost");
            }
            let result = accept(&app, params).await;
            assert_eq!(result[field], *value, "{field}");
        }
    }
}

#[tokio::test]
async fn enums_refuse_other_case_and_unknown_values_with_a_message_listing_the_values() {
    let app = spawn_app().await;
    for (field, values) in ENUMS {
        let first = values[0];
        let mut capitalised = first.to_string();
        capitalised[..1].make_ascii_uppercase();
        for bad in [
            json!(first.to_uppercase()),
            json!(capitalised),
            json!(format!(" {first} ")),
            json!(first.replace('_', "-") + "x"),
            json!("unknown"),
            json!(""),
            json!(1),
            json!([first]),
        ] {
            let mut params = with(&[(field, bad.clone())]);
            if field == "lostReasonCategory" {
                params["stage"] = json!("lost");
            }
            let messages = refuse_on(&app, params, field).await;
            assert!(
                messages.iter().any(|m| values.iter().all(|v| m.contains(v))),
                "{field}={bad}: a message should list {values:?}, got {messages:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// estimatedValue
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn estimated_value_accepts_money_returns_it_equal_and_stores_it_exactly() {
    let app = spawn_app().await;
    // (JSON literal sent, exact stored decimal)
    let cases = [
        ("0", "0.00"),
        ("1e12", "1000000000000.00"),
        ("1000000000000", "1000000000000.00"),
        ("125000.5", "125000.50"),
        ("125000.50", "125000.50"),
        ("0.07", "0.07"),
        ("19.99", "19.99"),
        ("0.1", "0.10"),
        ("1.10", "1.10"),
        ("42", "42.00"),
        ("999999999999.99", "999999999999.99"),
    ];
    // Every case is tried; the mismatches are reported together.
    let mut problems = Vec::new();
    for (literal, stored) in cases {
        let response = create_raw(&app, &params_with_estimated_value(literal)).await;
        let result = &response["result"];
        if !result.is_object() {
            problems.push(format!("{literal}: not accepted: {response}"));
            continue;
        }
        if result["estimatedValue"].as_f64() != Some(literal.parse::<f64>().unwrap()) {
            problems.push(format!("{literal}: returned as {}", result["estimatedValue"]));
        }
        let id = result["id"].as_str().unwrap();
        let actual = stored_estimated_value(&app, id).await;
        if actual.as_deref() != Some(stored) {
            problems.push(format!("{literal}: stored as {actual:?}, expected {stored}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Not set: nothing stored.
    let result = accept(&app, valid_params()).await;
    assert_eq!(stored_estimated_value(&app, result["id"].as_str().unwrap()).await, None);
}

#[tokio::test]
async fn estimated_value_refuses_negative_too_large_sub_cent_and_non_numbers() {
    let app = spawn_app().await;
    for literal in [
        "-0.01",
        "-1",
        "1000000000000.01",
        "1000000000001",
        "1e13",
        "1.005",
        "0.001",
        "19.999",
        "\"125000.5\"",
        "\"12\"",
        "\"NaN\"",
        "true",
        "false",
        "[]",
        "{}",
    ] {
        let params = params_with_estimated_value(literal);
        let response = create_raw(&app, &params).await;
        let data = invalid_params(&response, &json!(params));
        assert_eq!(field_error_keys(data), ["estimatedValue"], "{literal}: {response}");
        field_errors(data, "estimatedValue");
    }
}

// ---------------------------------------------------------------------------------------------
// probability, lostReasonCategory
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn probability_accepts_integers_from_0_to_100() {
    let app = spawn_app().await;
    for p in [0, 1, 50, 99, 100] {
        let result = accept(&app, with(&[("probability", json!(p))])).await;
        assert_eq!(result["probability"], p, "{result}");
    }
}

/// An integer is a JSON number with no fractional part however written (§4): each spelling of a
/// value gets the same answer as the plain one, zero included.
#[tokio::test]
async fn probability_integers_are_the_same_however_written() {
    let app = spawn_app().await;
    for (literal, value) in [
        ("0", 0),
        ("0.0", 0),
        ("-0", 0),
        ("-0.0", 0),
        ("0e0", 0),
        ("0.00E+5", 0),
        ("50", 50),
        ("50.0", 50),
        ("5E+1", 50),
        ("500e-1", 50),
        ("1e2", 100),
        ("100.000", 100),
    ] {
        let params = format!(
            r#"{{"customerId":"550e8400-e29b-41d4-a716-446655440000","title":"Chiller","pipelineType":"retrofit","probability":{literal}}}"#
        );
        let response = create_raw(&app, &params).await;
        assert_eq!(response["result"]["probability"], json!(value), "probability {literal}: {response}");
    }
    for (literal, message) in
        [("0.5", "must be an integer"), ("-1.0", "must be between 0 and 100"), ("1e3", "must be between 0 and 100")]
    {
        let params = format!(
            r#"{{"customerId":"550e8400-e29b-41d4-a716-446655440000","title":"Chiller","pipelineType":"retrofit","probability":{literal}}}"#
        );
        let response = create_raw(&app, &params).await;
        let data = invalid_params(&response, &json!(literal));
        assert_eq!(field_errors(data, "probability"), [message], "probability {literal}");
    }
}

#[tokio::test]
async fn probability_refuses_out_of_range_fractions_and_non_integers() {
    let app = spawn_app().await;
    let messages = refuse_on(&app, with(&[("probability", json!(101))]), "probability").await;
    assert_eq!(messages, ["must be between 0 and 100"], "the §4 message");
    for bad in [json!(-1), json!(1000), json!(50.5), json!(0.1), json!("50"), json!(true), json!([50])] {
        refuse_on(&app, with(&[("probability", bad)]), "probability").await;
    }
}

#[tokio::test]
async fn probability_must_be_100_when_won_and_0_when_lost() {
    let app = spawn_app().await;
    for (stage, p) in [("won", 100), ("lost", 0)] {
        let result = accept(&app, with(&[("stage", json!(stage)), ("probability", json!(p))])).await;
        assert_eq!(result["probability"], p);
    }
    for (stage, p) in [("won", 99), ("won", 0), ("won", 50), ("lost", 1), ("lost", 100), ("lost", 50)] {
        let data = refuse(&app, with(&[("stage", json!(stage)), ("probability", json!(p))])).await;
        field_errors(&data, "probability");
        // §4: a rule across fields is (also) a form error.
        assert!(!form_errors(&data).is_empty(), "{stage}/{p}: {data}");
    }
    // The other stages take any probability.
    for stage in ["lead", "qualified", "survey", "proposal", "negotiation"] {
        for p in [0, 100, 37] {
            accept(&app, with(&[("stage", json!(stage)), ("probability", json!(p))])).await;
        }
    }
}

#[tokio::test]
async fn lost_reason_category_only_with_stage_lost() {
    let app = spawn_app().await;
    let result = accept(&app, with(&[("stage", json!("lost")), ("lostReasonCategory", json!("price"))])).await;
    assert_eq!(result["lostReasonCategory"], "price");

    let mut cases: Vec<Value> = STAGES
        .iter()
        .filter(|s| **s != "lost")
        .map(|s| with(&[("stage", json!(s)), ("lostReasonCategory", json!("price"))]))
        .collect();
    // Stage absent: the default "lead".
    cases.push(with(&[("lostReasonCategory", json!("competitor"))]));
    for params in cases {
        let data = refuse(&app, params.clone()).await;
        let form = form_errors(&data);
        assert!(!form.is_empty(), "§4: a rule across fields is a form error: {data}");
        assert!(
            data["fieldErrors"]["lostReasonCategory"].is_array()
                || form.iter().any(|m| m.contains("lostReasonCategory")),
            "the problem names lostReasonCategory: sent {params}, got {data}"
        );
    }
    // Null is "not set", so fine with any stage.
    accept(&app, with(&[("lostReasonCategory", Value::Null)])).await;
}

// ---------------------------------------------------------------------------------------------
// Date-times
// ---------------------------------------------------------------------------------------------

/// Sets every date field to `value`.
fn with_dates(value: &Value) -> Value {
    let fields: Vec<(&str, Value)> = DATE_FIELDS.iter().map(|f| (*f, value.clone())).collect();
    with(&fields)
}

#[tokio::test]
async fn date_times_with_an_offset_are_accepted_and_returned_in_utc_with_z() {
    let app = spawn_app().await;
    let cases = [
        ("2026-12-01T09:30:00+02:00", "2026-12-01T07:30:00Z"),
        ("2026-12-01T09:30:00.125+02:00", "2026-12-01T07:30:00.125Z"),
        ("2026-12-01T07:30:00Z", "2026-12-01T07:30:00Z"),
        ("2026-12-01T07:30:00+00:00", "2026-12-01T07:30:00Z"),
        ("2026-06-30T23:59:59-05:30", "2026-07-01T05:29:59Z"),
        ("2027-03-31T19:00:00+02:00", "2027-03-31T17:00:00Z"),
        // Fractions of zero are left out.
        ("2026-12-01T07:30:00.000Z", "2026-12-01T07:30:00Z"),
        // Kept to the microsecond, truncated below.
        ("2026-12-01T07:30:00.123456Z", "2026-12-01T07:30:00.123456Z"),
        ("2026-12-01T07:30:00.000001Z", "2026-12-01T07:30:00.000001Z"),
        ("2026-12-01T07:30:00.1234567Z", "2026-12-01T07:30:00.123456Z"),
        ("2026-12-01T07:30:00.9999999+01:00", "2026-12-01T06:30:00.999999Z"),
        // RFC 3339 allows lowercase t and z.
        ("2026-12-01t07:30:00z", "2026-12-01T07:30:00Z"),
        // The year bounds, inclusive.
        ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z"),
        ("2200-12-31T23:59:59Z", "2200-12-31T23:59:59Z"),
    ];
    for (sent, expected) in cases {
        let result = accept(&app, with_dates(&json!(sent))).await;
        for field in DATE_FIELDS {
            assert_eq!(result[field], expected, "{field}: sent {sent}");
        }
    }
}

#[tokio::test]
async fn date_times_without_offset_malformed_or_out_of_range_are_refused() {
    let app = spawn_app().await;
    for bad in [
        json!("2026-12-01"),
        json!("2026-12-01T09:30:00"),
        json!("2026-12-01T09:30:00.125"),
        json!("2026-12-01T09:30"),
        json!("2026-12-01T09:30+02:00"),
        json!("tomorrow"),
        json!(""),
        json!("12/01/2026 09:30 +02:00"),
        json!("2026-13-01T00:00:00Z"),
        json!("2026-02-30T00:00:00Z"),
        json!("2026-12-01T25:00:00Z"),
        json!("2026-12-01T09:30:00+25:00"),
        // Years outside 1970–2200.
        json!("1969-12-31T23:59:59Z"),
        json!("2201-01-01T00:00:00Z"),
        json!("0001-01-01T00:00:00Z"),
        json!("9999-12-31T23:59:59Z"),
        // Not strings.
        json!(1_764_581_400),
        json!(true),
        json!({"date": "2026-12-01T09:30:00Z"}),
    ] {
        let params = with_dates(&bad);
        let data = refuse(&app, params).await;
        assert_eq!(
            field_error_keys(&data),
            ["bidDueDate", "expectedCloseDate", "nextStepDate"],
            "{bad}: every date field reported, nothing else"
        );
    }
    // One field alone.
    for field in DATE_FIELDS {
        refuse_on(&app, with(&[(field, json!("2026-12-01"))]), field).await;
        refuse_on(&app, with(&[(field, json!("1969-12-31T23:59:59Z"))]), field).await;
        refuse_on(&app, with(&[(field, json!("2201-01-01T00:00:00Z"))]), field).await;
    }
}

/// Second 60 (a leap second) is refused with a message naming it, on every backend alike
/// (SQLite and PostgreSQL would store it differently); so is any shape RFC 3339's grammar does
/// not have, such as an offset written with U+2212 MINUS SIGN, which chrono alone would take.
#[tokio::test]
async fn date_times_with_second_60_or_outside_the_rfc_3339_grammar_are_refused() {
    let app = spawn_app().await;
    let leap =
        "must not have second 60: leap seconds are not accepted (use :59, or the first second of the next minute)";
    for sent in ["2026-06-15T12:34:60Z", "2016-12-31T23:59:60Z", "2016-12-31T23:59:60.999+00:00"] {
        let data = refuse(&app, with_dates(&json!(sent))).await;
        for field in DATE_FIELDS {
            assert_eq!(field_errors(&data, field), [leap], "{field}: sent {sent}");
        }
    }
    let form = "must be an RFC 3339 date-time with an offset, e.g. 2026-12-01T09:30:00+02:00";
    for sent in [
        "2026-12-01T09:30:00\u{2212}02:00",
        "2026-12-01T09:30:00\u{2013}02:00",
        "2026-12-01T09:30:00+0200",
        "2026-12-01T09:30:00+02",
        "2026-12-01 09:30:00Z",
        "2026-12-01T09:30:00.Z",
        "2026-12-01T09:30:00Z ",
        "2026-12-01T09:30:00 Z",
        "2026-12-01T09:30:00UTC",
        "\u{FF12}026-12-01T09:30:00Z",
    ] {
        let data = refuse(&app, with_dates(&json!(sent))).await;
        for field in DATE_FIELDS {
            assert_eq!(field_errors(&data, field), [form], "{field}: sent {sent:?}");
        }
    }
    assert_eq!(app.count(None).await, 0, "nothing was stored");
    // The second before and the one after are fine.
    let result = accept(&app, with(&[("expectedCloseDate", json!("2016-12-31T23:59:59Z"))])).await;
    assert_eq!(result["expectedCloseDate"], "2016-12-31T23:59:59Z");
    let result = accept(&app, with(&[("expectedCloseDate", json!("2016-12-31T23:59:59.999999-00:00"))])).await;
    assert_eq!(result["expectedCloseDate"], "2016-12-31T23:59:59.999999Z");
}

// ---------------------------------------------------------------------------------------------
// solutionFamilies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn solution_families_default_to_empty_and_items_are_trimmed() {
    let app = spawn_app().await;
    assert_eq!(accept(&app, valid_params()).await["solutionFamilies"], json!([]));
    assert_eq!(accept(&app, with(&[("solutionFamilies", json!([]))])).await["solutionFamilies"], json!([]));
    let result = accept(&app, with(&[("solutionFamilies", json!(["  HVAC ", "\tControls\n", "Fire safety"]))])).await;
    assert_eq!(result["solutionFamilies"], json!(["HVAC", "Controls", "Fire safety"]));
    // 50 items, 100-character items (characters, not bytes), and order kept.
    let fifty: Vec<String> = (0..50).map(|i| format!("family {i:02}")).collect();
    assert_eq!(accept(&app, with(&[("solutionFamilies", json!(fifty))])).await["solutionFamilies"], json!(fifty));
    let long = vec!["é".repeat(100), "x".repeat(100)];
    assert_eq!(accept(&app, with(&[("solutionFamilies", json!(long))])).await["solutionFamilies"], json!(long));
}

#[tokio::test]
async fn solution_families_over_50_empty_long_or_duplicate_items_are_refused() {
    let app = spawn_app().await;
    let fifty_one: Vec<String> = (0..51).map(|i| format!("family {i:02}")).collect();
    refuse_on(&app, with(&[("solutionFamilies", json!(fifty_one))]), "solutionFamilies").await;

    let data = refuse(
        &app,
        with(&[(
            "solutionFamilies",
            json!(["HVAC", "", "x".repeat(101), " HVAC ", "   ", "é".repeat(101), "Controls"]),
        )]),
    )
    .await;
    assert_eq!(
        field_error_keys(&data),
        ["solutionFamilies.1", "solutionFamilies.2", "solutionFamilies.3", "solutionFamilies.4", "solutionFamilies.5",],
        "{data}"
    );
    for key in field_error_keys(&data) {
        field_errors(&data, &key);
    }
    // A duplicate alone.
    refuse_on(&app, with(&[("solutionFamilies", json!(["Controls", "Controls"]))]), "solutionFamilies.1").await;
}

#[tokio::test]
async fn solution_families_must_be_an_array_of_strings() {
    let app = spawn_app().await;
    for bad in [json!("HVAC"), json!(42), json!(true), json!({"0": "HVAC"})] {
        refuse_on(&app, with(&[("solutionFamilies", bad)]), "solutionFamilies").await;
    }
    let data = refuse(&app, with(&[("solutionFamilies", json!(["HVAC", 1, null, {}, ["x"], "Controls"]))])).await;
    assert_eq!(
        field_error_keys(&data),
        ["solutionFamilies.1", "solutionFamilies.2", "solutionFamilies.3", "solutionFamilies.4",],
        "{data}"
    );
}

/// An item that is not a string hides none of the other items' problems (empty, repeated, too
/// long), on a create and on an update: every problem at once.
#[tokio::test]
async fn an_item_that_is_not_a_string_hides_no_other_items_problem() {
    let app = spawn_app().await;
    let items = json!(["HVAC", "", " HVAC ", null, "x".repeat(101), 5]);
    let expected = [
        ("solutionFamilies.1", "must not be empty"),
        ("solutionFamilies.2", "must not repeat item 0"),
        ("solutionFamilies.3", "must be a string"),
        ("solutionFamilies.4", "must be at most 100 characters"),
        ("solutionFamilies.5", "must be a string"),
    ];
    let check = |data: &Value, what: &str| {
        let keys: Vec<&str> = expected.iter().map(|(k, _)| *k).collect();
        assert_eq!(field_error_keys(data), keys, "{what}: {data}");
        for (key, message) in expected {
            let messages = field_errors(data, key);
            assert!(messages.iter().any(|m| m.contains(message)), "{what}: {key} says {messages:?}, not {message:?}");
        }
    };
    check(&refuse(&app, with(&[("solutionFamilies", items.clone())])).await, "create");
    let token = app.token();
    let o = create(&app, &token, json!({})).await;
    let params = json!({"id": o["id"], "expectedVersion": 1, "solutionFamilies": items});
    let answer = call(&app, &token, "opportunity.update", params.clone()).await;
    check(invalid_params(&answer, &params), "update");
}

// ---------------------------------------------------------------------------------------------
// Other text fields, NUL characters
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn text_fields_take_up_to_10000_characters() {
    let app = spawn_app().await;
    // Two-byte characters: the limit counts characters, not bytes.
    let max = "é".repeat(10_000);
    let fields: Vec<(&str, Value)> = TEXT_FIELDS.iter().map(|f| (*f, json!(max))).collect();
    let result = accept(&app, with(&fields)).await;
    for field in TEXT_FIELDS {
        assert_eq!(result[field], max, "{field}");
    }
    let result = accept(&app, with(&[("scopeSummary", json!("x".repeat(10_000)))])).await;
    assert_eq!(result["scopeSummary"], "x".repeat(10_000));

    for field in TEXT_FIELDS {
        refuse_on(&app, with(&[(field, json!("x".repeat(10_001)))]), field).await;
        refuse_on(&app, with(&[(field, json!("é".repeat(10_001)))]), field).await;
        refuse_on(&app, with(&[(field, json!(42))]), field).await;
    }
}

#[tokio::test]
async fn nul_characters_are_refused_in_every_text() {
    let app = spawn_app().await;
    for field in TEXT_FIELDS.iter().chain(&["title"]) {
        refuse_on(&app, with(&[(*field, json!("before\u{0}after"))]), field).await;
        refuse_on(&app, with(&[(*field, json!("\u{0}"))]), field).await;
    }
    refuse_on(&app, with(&[("solutionFamilies", json!(["HVAC", "Con\u{0}trols"]))]), "solutionFamilies.1").await;
    // The same texts without the NUL are fine.
    let fields: Vec<(&str, Value)> = TEXT_FIELDS.iter().map(|f| (*f, json!("before after"))).collect();
    accept(&app, with(&fields)).await;
}

// ---------------------------------------------------------------------------------------------
// ownerUserId, params shape
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn owner_defaults_to_the_caller_and_an_explicit_owner_is_kept() {
    let app = spawn_app().await;
    let result = accept(&app, valid_params()).await;
    assert_eq!(result["ownerUserId"], app.user.to_string(), "{result}");
    assert_eq!(result["createdBy"], app.user.to_string(), "{result}");

    let owner = Uuid::new_v4();
    let result = accept(&app, with(&[("ownerUserId", json!(owner))])).await;
    assert_eq!(result["ownerUserId"], owner.to_string(), "{result}");
    assert_eq!(result["createdBy"], app.user.to_string(), "{result}");
}

#[tokio::test]
async fn params_as_a_one_element_array_holding_the_object_are_accepted() {
    let app = spawn_app().await;
    let result = accept(&app, json!([with(&[("probability", json!(40))])])).await;
    assert_eq!(result["title"], "Chiller retrofit, Building C");
    assert_eq!(result["probability"], 40);
    // The object inside is checked like any other.
    let data = refuse(&app, json!([without("title")])).await;
    field_errors(&data, "title");
}

#[tokio::test]
async fn params_that_are_not_an_object_are_refused_with_a_form_error() {
    let app = spawn_app().await;
    let mut bodies: Vec<Value> = [
        json!(42),
        json!("opportunity"),
        json!(true),
        json!([]),
        json!([valid_params(), valid_params()]),
        json!([42]),
        json!([[valid_params()]]),
    ]
    .into_iter()
    .map(|params| request(json!(1), "opportunity.create", params))
    .collect();
    // (Params left out or `null` are params with no member: see
    // lifecycle::bad_params_of_every_method_are_reported_at_once.)
    bodies.push(request(json!(1), "opportunity.create", json!([null])));
    for body in bodies {
        let (_, response) = app.post(&body, &app.token()).await;
        let data = invalid_params(&response, &body);
        assert!(!form_errors(data).is_empty(), "sent {body}\ngot {response}");
    }
    assert_eq!(app.count(None).await, 0);
}

// ---------------------------------------------------------------------------------------------
// The answer
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn answer_holds_every_field_and_the_server_fields() {
    let app = spawn_app().await;
    let before = chrono::Utc::now();
    let result = accept(&app, valid_params()).await;
    let after = chrono::Utc::now();

    let mut keys: Vec<&str> = result.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected: Vec<&str> = SEED_FIELDS.iter().chain(&SERVER_FIELDS).copied().collect();
    expected.sort_unstable();
    assert_eq!(keys, expected, "{result}");

    let id = result["id"].as_str().expect("id is a string");
    let parsed = Uuid::parse_str(id).expect("id is a UUID");
    assert_eq!(parsed.get_version_num(), 7, "UUID v7: {id}");
    assert_eq!(id, parsed.hyphenated().to_string(), "lowercase hyphenated");
    assert_eq!(result["workspaceId"], app.workspace.to_string());
    assert_eq!(result["createdBy"], app.user.to_string());
    assert_eq!(result["version"], 1);
    assert_eq!(result["isClosed"], false);
    assert_eq!(result["isWon"], false);

    let created = result["createdAt"].as_str().expect("createdAt is a string");
    assert_eq!(result["updatedAt"], created, "createdAt = updatedAt");
    assert!(created.ends_with('Z'), "{created}");
    let at = chrono::DateTime::parse_from_rfc3339(created).expect("RFC 3339");
    let slack = chrono::Duration::seconds(1);
    assert!(at >= before - slack && at <= after + slack, "{created} between {before} and {after}");

    // Two creates: two ids.
    let other = accept(&app, valid_params()).await;
    assert_ne!(other["id"], result["id"]);
}

#[tokio::test]
async fn answer_echoes_every_field_when_all_are_set() {
    let app = spawn_app().await;
    let owner = Uuid::new_v4();
    let params = json!({
        "customerId": "550e8400-e29b-41d4-a716-446655440000",
        "primaryContactId": "11111111-2222-4333-8444-555555555555",
        "siteId": "66666666-7777-4888-9999-aaaaaaaaaaaa",
        "title": "Chiller retrofit, Building C",
        "stage": "lost",
        "pipelineType": "expansion",
        "source": "trade_show",
        "estimatedValue": 19.99,
        "expectedCloseDate": "2027-03-31T19:00:00+02:00",
        "probability": 0,
        "solutionFamilies": ["HVAC", "Controls"],
        "scopeSummary": "Replace two chillers.",
        "competitorNotes": "Two bidders.",
        "winLossReason": "Price.",
        "nextStepDescription": "Debrief.",
        "nextStepDate": "2026-12-01T09:30:00.125+02:00",
        "bidDueDate": "2026-11-30T12:00:00Z",
        "budgetConfirmed": true,
        "priority": "urgent",
        "lostReasonCategory": "competitor",
        "technicalRequirements": "R-513A.",
        "ownerUserId": owner.to_string(),
        "workspaceId": app.workspace.to_string(),
        "visibilityMode": "shared",
    });
    let mut result = accept(&app, params.clone()).await;
    let obj = result.as_object_mut().unwrap();
    for field in ["id", "createdAt", "updatedAt"] {
        assert!(obj.remove(field).is_some(), "{field}");
    }
    let mut expected = params;
    for (field, value) in [
        ("expectedCloseDate", json!("2027-03-31T17:00:00Z")),
        ("nextStepDate", json!("2026-12-01T07:30:00.125Z")),
        ("createdBy", json!(app.user.to_string())),
        ("version", json!(1)),
        ("isClosed", json!(true)),
        ("isWon", json!(false)),
        ("archivedAt", Value::Null),
    ] {
        expected[field] = value;
    }
    assert_eq!(result, expected);
}

#[tokio::test]
async fn is_closed_and_is_won_follow_the_stage() {
    let app = spawn_app().await;
    for stage in STAGES {
        let result = accept(&app, with(&[("stage", json!(stage))])).await;
        let (closed, won) = match stage {
            "won" => (true, true),
            "lost" => (true, false),
            _ => (false, false),
        };
        assert_eq!(result["stage"], stage);
        assert_eq!(result["isClosed"], closed, "{stage}");
        assert_eq!(result["isWon"], won, "{stage}");
    }
}

#[tokio::test]
async fn a_refused_create_writes_nothing() {
    let app = spawn_app().await;
    for params in [
        without("title"),
        with(&[("pipeline_type", json!("retrofit"))]),
        with(&[("customerId", json!("nope"))]),
        with(&[("estimatedValue", json!(1.005))]),
        with(&[("stage", json!("won")), ("probability", json!(50))]),
        with(&[("lostReasonCategory", json!("price"))]),
        with(&[("solutionFamilies", json!(["a", "a"]))]),
        with(&[("expectedCloseDate", json!("2026-12-01"))]),
    ] {
        refuse(&app, params).await;
    }
    assert_eq!(app.count(None).await, 0);
    accept(&app, valid_params()).await;
    assert_eq!(app.count(None).await, 1);
}

// ---------------------------------------------------------------------------------------------
// Headers that stand for params: X-Workspace-Id and Idempotency-Key
// ---------------------------------------------------------------------------------------------

/// POSTs `body` with the app's token and `headers` (repeated names are sent repeated).
async fn post_with_headers(app: &TestApp, body: &Value, headers: &[(&str, &str)]) -> Value {
    let auth = format!("Bearer {}", app.token());
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    app.post_raw(body.to_string(), &all).await.1
}

/// A header sent twice has no one value: the first does not silently win. The call is refused
/// with a field error on the field the header stands for; nothing is written.
#[tokio::test]
async fn repeated_workspace_or_idempotency_headers_are_field_errors() {
    let app = spawn_app().await;
    let ws = app.workspace.to_string();
    let other = Uuid::new_v4().to_string();
    let body = request(json!(1), "opportunity.create", valid_params());
    for (case, headers, field, message) in [
        (
            "X-Workspace-Id twice, same value",
            vec![("x-workspace-id", ws.as_str()), ("x-workspace-id", ws.as_str())],
            "workspaceId",
            "the X-Workspace-Id header was sent more than once; send it once",
        ),
        (
            "X-Workspace-Id twice, the token's first",
            vec![("x-workspace-id", ws.as_str()), ("x-workspace-id", other.as_str())],
            "workspaceId",
            "the X-Workspace-Id header was sent more than once; send it once",
        ),
        (
            "Idempotency-Key twice",
            vec![("idempotency-key", "key-1"), ("idempotency-key", "key-2")],
            "idempotencyKey",
            "the Idempotency-Key header was sent more than once; send it once",
        ),
        (
            "Idempotency-Key twice, same value",
            vec![("idempotency-key", "key-1"), ("Idempotency-Key", "key-1")],
            "idempotencyKey",
            "the Idempotency-Key header was sent more than once; send it once",
        ),
    ] {
        let response = post_with_headers(&app, &body, &headers).await;
        let data = invalid_params(&response, &json!(case));
        assert_eq!(field_error_keys(data), [field], "{case}: {response}");
        assert_eq!(field_errors(data, field), [message], "{case}");
    }
    assert_eq!(app.count(None).await, 0, "nothing was written");
    // Once each, they work.
    let response = post_with_headers(&app, &body, &[("x-workspace-id", &ws), ("idempotency-key", "key-1")]).await;
    assert_eq!(response["result"]["workspaceId"], ws, "{response}");
}

/// One `Idempotency-Key` header cannot be the key of every call of a batch (the second call
/// would replay or conflict with the first): each create of such a batch is refused with a
/// field error saying to send per-call keys in params; keys in params work in a batch.
#[tokio::test]
async fn an_idempotency_key_header_on_a_batch_is_refused_per_call() {
    let app = spawn_app().await;
    let titled = |title: &str| {
        let mut params = valid_params();
        params["title"] = json!(title);
        params
    };
    let batch = json!([
        request(json!(1), "opportunity.create", titled("first")),
        request(json!(2), "opportunity.create", titled("second")),
        request(json!(3), "opportunity.create", titled("third")),
    ]);
    let answers = post_with_headers(&app, &batch, &[("idempotency-key", "batch-key")]).await;
    let answers = answers.as_array().unwrap_or_else(|| panic!("a batch answer: {answers}"));
    assert_eq!(answers.len(), 3, "{answers:?}");
    for answer in answers {
        let data = invalid_params(answer, &batch);
        assert_eq!(field_error_keys(data), ["idempotencyKey"], "{answer}");
        assert_eq!(
            field_errors(data, "idempotencyKey"),
            [
                "the Idempotency-Key header cannot be used with a batch: send each call's own idempotencyKey in its params"
            ]
        );
    }
    // Also a one-call batch, and a batch after white space.
    let one = format!(" \n[{}]", request(json!(1), "opportunity.create", valid_params()));
    let auth = format!("Bearer {}", app.token());
    let (_, answer) = app.post_raw(one, &[("authorization", &auth), ("idempotency-key", "batch-key")]).await;
    assert_eq!(
        answer[0]["error"]["data"]["fieldErrors"]["idempotencyKey"].as_array().map(Vec::len),
        Some(1),
        "{answer}"
    );
    assert_eq!(app.count(None).await, 0, "nothing was written");

    // Keys in params: each call its own, replayed on a retry of the batch.
    let keyed = |title: &str, key: &str| {
        let mut params = titled(title);
        params["idempotencyKey"] = json!(key);
        params
    };
    let batch = json!([
        request(json!(1), "opportunity.create", keyed("first", "k-1")),
        request(json!(2), "opportunity.create", keyed("second", "k-2")),
    ]);
    let first = post_with_headers(&app, &batch, &[]).await;
    let again = post_with_headers(&app, &batch, &[]).await;
    for i in 0..2 {
        assert!(first[i]["result"]["id"].is_string(), "{first}");
        assert_eq!(first[i]["result"]["id"], again[i]["result"]["id"], "replayed: {again}");
    }
    assert_eq!(app.count(None).await, 2);
    // A single call keeps the header key.
    let single = request(json!(1), "opportunity.create", titled("single"));
    let one = post_with_headers(&app, &single, &[("idempotency-key", "single-key")]).await;
    let two = post_with_headers(&app, &single, &[("idempotency-key", "single-key")]).await;
    assert_eq!(one["result"]["id"], two["result"]["id"], "{one} {two}");
    assert_eq!(app.count(None).await, 3);
}

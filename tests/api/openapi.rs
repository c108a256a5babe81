//! openapi/openapi.yaml against what the service does. The document is generated from the
//! wire types (src/rpc/openapi.rs; a unit test there keeps the committed file equal to what the
//! code generates), so its lists of fields, enum values and error codes are the code's own. What
//! is checked here is behaviour: the readers and the generated schemas decide alike on values
//! (required fields, `null`, bounds, patterns, rules across fields), the error schema holds
//! every error the code makes, and real answers of the running application fit the document.
//!
//! The document is read with `serde_norway` and its schemas are applied with `jsonschema`
//! (JSON Schema 2020-12, the dialect of OpenAPI 3.1), formats asserted. Where a rule is checked
//! on values ("the code and the document agree on this input"), the expected outcome is stated
//! too, so that both cannot drift the same wrong way.
//!
//! The last section holds regression tests for what schemathesis (`.ci/schemathesis`) found.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use jsonschema::{Registry, Validator};
use opportunity_service::domain::opportunity::{
    MAX_ESTIMATED_VALUE_CENTS, MAX_SOLUTION_FAMILIES, MAX_SOLUTION_FAMILY_CHARS, MAX_TEXT_CHARS, MAX_TITLE_CHARS, Stage,
};
use opportunity_service::error::{ApiError, CODES, ValidationFailure, trpc_name};
use opportunity_service::rpc::opportunity::{CREATE, CREATE_FIELDS, parse_create};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::*;

const DOCUMENT_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.yaml");
/// The URI the document is registered under, for `$ref`s into it.
const BASE: &str = "urn:opportunity-service:openapi";

/// The parsed document.
fn document() -> &'static Value {
    static DOCUMENT: LazyLock<Value> = LazyLock::new(|| {
        let text = std::fs::read_to_string(DOCUMENT_PATH).unwrap_or_else(|e| panic!("read {DOCUMENT_PATH}: {e}"));
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{DOCUMENT_PATH} is not valid YAML: {e}"))
    });
    &DOCUMENT
}

fn registry() -> &'static Registry<'static> {
    static REGISTRY: LazyLock<Registry<'static>> = LazyLock::new(|| {
        Registry::new()
            .add(BASE, document().clone())
            .and_then(|builder| builder.prepare())
            .expect("the document is a usable JSON Schema resource")
    });
    &REGISTRY
}

/// A validator for the schema at a JSON pointer of the document, formats asserted.
fn validator_at(pointer: &str) -> Validator {
    assert!(document().pointer(pointer).is_some(), "openapi.yaml has nothing at {pointer}");
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .with_registry(registry())
        .should_validate_formats(true)
        .build(&json!({ "$ref": format!("{BASE}#{pointer}") }))
        .unwrap_or_else(|e| panic!("the schema at {pointer} does not compile: {e}"))
}

/// A validator for `#/components/schemas/{name}`.
fn validator(name: &str) -> Validator {
    validator_at(&format!("/components/schemas/{name}"))
}

/// Every problem the schema finds, for failure messages.
fn problems(validator: &Validator, instance: &Value) -> Vec<String> {
    validator.iter_errors(instance).map(|e| format!("{}: {e}", e.instance_path())).collect()
}

fn assert_valid(validator: &Validator, instance: &Value, what: &str) {
    let found = problems(validator, instance);
    assert!(found.is_empty(), "{what} breaks openapi.yaml:\n  {}\ninstance: {instance:#}", found.join("\n  "));
}

fn schema(name: &str) -> &'static Value {
    document()
        .pointer(&format!("/components/schemas/{name}"))
        .unwrap_or_else(|| panic!("openapi.yaml has no components.schemas.{name}"))
}

/// Follows `$ref`s within the document.
fn resolve(mut value: &'static Value) -> &'static Value {
    while let Some(target) = value.get("$ref").and_then(Value::as_str) {
        let pointer = target.strip_prefix('#').unwrap_or_else(|| panic!("external $ref {target}"));
        value = document().pointer(pointer).unwrap_or_else(|| panic!("dangling $ref {target}"));
    }
    value
}

fn properties(name: &str) -> &'static serde_json::Map<String, Value> {
    schema(name)["properties"].as_object().unwrap_or_else(|| panic!("{name} has no properties"))
}

fn property(schema_name: &str, field: &str) -> &'static Value {
    properties(schema_name).get(field).unwrap_or_else(|| panic!("{schema_name} has no property {field}"))
}

/// The string enum a property allows, through `$ref`, `oneOf`, `anyOf` and `allOf` (`null` left
/// out).
fn enum_values(value: &'static Value) -> Option<Vec<String>> {
    if let Some(values) = value.get("enum").and_then(Value::as_array) {
        return Some(values.iter().filter_map(Value::as_str).map(str::to_string).collect());
    }
    if value.get("$ref").is_some() {
        return enum_values(resolve(value));
    }
    ["oneOf", "anyOf", "allOf"]
        .iter()
        .filter_map(|k| value.get(*k).and_then(Value::as_array))
        .flatten()
        .find_map(enum_values)
}

/// A keyword of a property, through `$ref`, `oneOf`, `anyOf` and `allOf`.
fn keyword(value: &'static Value, name: &str) -> Option<&'static Value> {
    if let Some(found) = value.get(name) {
        return Some(found);
    }
    if value.get("$ref").is_some() {
        return keyword(resolve(value), name);
    }
    ["oneOf", "anyOf", "allOf"]
        .iter()
        .filter_map(|k| value.get(*k).and_then(Value::as_array))
        .flatten()
        .find_map(|v| keyword(v, name))
}

fn keys(map: &serde_json::Map<String, Value>) -> BTreeSet<String> {
    map.keys().cloned().collect()
}

fn strings(values: &[&str]) -> BTreeSet<String> {
    values.iter().map(|s| s.to_string()).collect()
}

fn as_f64(value: Option<&Value>) -> Option<f64> {
    value.and_then(Value::as_f64)
}

// --- what the code says, without a server ----------------------------------------------------------

/// The problems the code finds in `params` (workspace and auth aside).
fn code_problems(params: &Value) -> ValidationFailure {
    parse_create(Some(&params.to_string()), None, None).1
}

/// The minimal valid params plus `extra`.
fn with(extra: Value) -> Value {
    let mut params = valid_params();
    for (k, v) in extra.as_object().expect("an object") {
        params[k] = v.clone();
    }
    params
}

/// Checks that the code and the document agree on `params`, and that both decide `expected`.
#[track_caller]
fn agree(params_validator: &Validator, params: Value, expected: bool) {
    let code = code_problems(&params);
    let doc = problems(params_validator, &params);
    let (code_ok, doc_ok) = (code.is_empty(), doc.is_empty());
    assert!(
        code_ok == expected && doc_ok == expected,
        "expected {} for {params}\n  the code {}: {:?} {:?}\n  openapi.yaml {}: {doc:?}",
        if expected { "acceptance" } else { "refusal" },
        if code_ok { "accepts" } else { "refuses" },
        code.field_errors,
        code.form_errors,
        if doc_ok { "accepts" } else { "refuses" },
    );
}

/// The fields `opportunity.create` accepts (those of its wire type).
fn create_fields() -> Vec<&'static str> {
    CREATE_FIELDS.iter().map(String::as_str).collect()
}

// --- 1. the params of opportunity.create -----------------------------------------------------------

#[test]
fn params_properties_are_the_create_fields() {
    let params = schema("CreateOpportunityParams");
    assert_eq!(keys(properties("CreateOpportunityParams")), strings(&create_fields()), "properties vs CREATE_FIELDS");
    assert_eq!(params["additionalProperties"], json!(false), "unknown fields are refused (§5)");
    assert_eq!(params["type"], "object");
}

#[test]
fn required_fields_are_those_the_code_requires() {
    let documented: BTreeSet<String> = schema("CreateOpportunityParams")["required"]
        .as_array()
        .expect("a required list")
        .iter()
        .map(|v| v.as_str().expect("names").to_string())
        .collect();
    assert_eq!(documented, strings(&["customerId", "title", "pipelineType"]), "the seed's required fields");
    let from_code: BTreeSet<String> = code_problems(&json!({}))
        .field_errors
        .into_iter()
        .filter(|(_, messages)| messages.iter().any(|m| m == "is required"))
        .map(|(field, _)| field)
        .collect();
    assert_eq!(documented, from_code, "openapi.yaml `required` vs the fields the code reports as required");
}

#[test]
fn enum_values_are_exact_in_the_code_and_the_document() {
    let v = validator("CreateOpportunityParams");
    for value in Stage::VALUES {
        let extra = match *value {
            "lost" => json!({"stage": value, "probability": 0}),
            _ => json!({"stage": value}),
        };
        agree(&v, with(extra), true);
    }
    agree(&v, with(json!({"stage": "LEAD"})), false);
    agree(&v, with(json!({"pipelineType": "Retrofit"})), false);
    agree(&v, with(json!({"source": "cold-call"})), false);
    agree(&v, with(json!({"priority": "critical"})), false);
    agree(&v, with(json!({"visibilityMode": "private"})), false);
    agree(&v, with(json!({"stage": "lost", "lostReasonCategory": "budget"})), false);
}

#[test]
fn nullability_agrees_with_the_code() {
    let v = validator("CreateOpportunityParams");
    for field in &create_fields() {
        let params = with(json!({ *field: null }));
        let code_refuses = code_problems(&params).has_field(field);
        let doc_refuses = !problems(&v, &params).is_empty();
        assert_eq!(
            code_refuses, doc_refuses,
            "`{field}: null`: the code refuses it: {code_refuses}, openapi.yaml: {doc_refuses}"
        );
    }
    // §5: null is refused for required fields (the defaulted ones included), accepted for the rest.
    for field in ["customerId", "title", "pipelineType", "stage", "budgetConfirmed", "visibilityMode"] {
        assert!(code_problems(&with(json!({ field: null }))).has_field(field), "`{field}: null` must be refused");
    }
}

#[test]
fn title_bounds() {
    let title = property("CreateOpportunityParams", "title");
    assert_eq!(title["maxLength"], json!(MAX_TITLE_CHARS), "title.maxLength vs MAX_TITLE_CHARS");
    assert_eq!(title["minLength"], json!(1));
    let v = validator("CreateOpportunityParams");
    agree(&v, with(json!({"title": "x".repeat(MAX_TITLE_CHARS)})), true);
    agree(&v, with(json!({"title": "é".repeat(MAX_TITLE_CHARS)})), true);
    agree(&v, with(json!({"title": "x".repeat(MAX_TITLE_CHARS + 1)})), false);
    agree(&v, with(json!({"title": "日".repeat(MAX_TITLE_CHARS + 1)})), false);
    agree(&v, with(json!({"title": ""})), false);
    agree(&v, with(json!({"title": 5})), false);
    // Trimmed of white space and of what shows nothing: alone, they are empty; control
    // characters are refused wherever trimming leaves them.
    for (title, ok) in [
        ("   ", false),
        ("\t\n\u{85}\u{a0}\u{2003}\u{3000}", false),
        ("\u{3000}x\u{3000}", true),
        ("\u{feff}", false),
        ("\u{200b}\u{feff}\u{202e}\u{2060}", false),
        ("\u{200b}x\u{feff}", true),
        ("\tx\n", true),
        ("a b\u{200d}c", true),
        ("a\tb", false),
        ("a\nb", false),
        ("a\u{1b}", false),
        ("\u{1c}a", false),
        ("a\u{9b}b", false),
        ("\u{1F600}", true),
    ] {
        agree(&v, with(json!({ "title": title })), ok);
        agree(&v, with(json!({ "solutionFamilies": [title] })), ok);
    }
}

#[test]
fn text_fields_are_those_the_code_limits() {
    let too_long = "x".repeat(MAX_TEXT_CHARS as usize + 1);
    let limit_message = format!("must be at most {MAX_TEXT_CHARS} characters");
    let from_code: BTreeSet<String> = create_fields()
        .iter()
        .filter(|field| {
            code_problems(&with(json!({ **field: too_long })))
                .field_errors
                .get(**field)
                .is_some_and(|messages| messages.contains(&limit_message))
        })
        .map(|f| f.to_string())
        .collect();
    assert_eq!(
        from_code,
        strings(&["scopeSummary", "competitorNotes", "winLossReason", "nextStepDescription", "technicalRequirements"]),
        "the free-text fields of the seed"
    );
    let documented: BTreeSet<String> = properties("CreateOpportunityParams")
        .iter()
        .filter(|(_, p)| keyword(p, "maxLength") == Some(&json!(MAX_TEXT_CHARS)))
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(documented, from_code, "properties with maxLength MAX_TEXT_CHARS vs the fields the code limits to it");
    let v = validator("CreateOpportunityParams");
    for field in &from_code {
        agree(&v, with(json!({ field: "x".repeat(MAX_TEXT_CHARS as usize) })), true);
        agree(&v, with(json!({ field: "é".repeat(MAX_TEXT_CHARS as usize) })), true);
        agree(&v, with(json!({ field: too_long })), false);
        agree(&v, with(json!({ field: 42 })), false);
        agree(&v, with(json!({ field: "line 1\r\n\tline 2" })), true);
        agree(&v, with(json!({ field: "\u{1b}[31m" })), false);
        agree(&v, with(json!({ field: "C1 \u{85}" })), false);
    }
}

#[test]
fn solution_families_bounds() {
    let families = property("CreateOpportunityParams", "solutionFamilies");
    assert_eq!(families["maxItems"], json!(MAX_SOLUTION_FAMILIES), "maxItems vs MAX_SOLUTION_FAMILIES");
    assert_eq!(families["uniqueItems"], json!(true));
    assert_eq!(families["items"]["maxLength"], json!(MAX_SOLUTION_FAMILY_CHARS), "items.maxLength");
    assert_eq!(families["items"]["minLength"], json!(1));
    let v = validator("CreateOpportunityParams");
    let items = |n: u64| (0..n).map(|i| format!("family {i}")).collect::<Vec<_>>();
    agree(&v, with(json!({"solutionFamilies": []})), true);
    agree(&v, with(json!({"solutionFamilies": items(MAX_SOLUTION_FAMILIES)})), true);
    agree(&v, with(json!({"solutionFamilies": items(MAX_SOLUTION_FAMILIES + 1)})), false);
    agree(&v, with(json!({"solutionFamilies": ["x".repeat(MAX_SOLUTION_FAMILY_CHARS)]})), true);
    agree(&v, with(json!({"solutionFamilies": ["x".repeat(MAX_SOLUTION_FAMILY_CHARS + 1)]})), false);
    agree(&v, with(json!({"solutionFamilies": [""]})), false);
    agree(&v, with(json!({"solutionFamilies": [" \u{2003}"]})), false);
    agree(&v, with(json!({"solutionFamilies": ["\u{2003}HVAC "]})), true);
    agree(&v, with(json!({"solutionFamilies": ["HVAC", "HVAC"]})), false);
    agree(&v, with(json!({"solutionFamilies": ["HVAC", 1]})), false);
    agree(&v, with(json!({"solutionFamilies": "HVAC"})), false);
}

#[test]
fn probability_bounds() {
    let probability = property("CreateOpportunityParams", "probability");
    assert_eq!(as_f64(probability.get("minimum")), Some(0.0));
    assert_eq!(as_f64(probability.get("maximum")), Some(100.0));
    let v = validator("CreateOpportunityParams");
    for (value, ok) in
        [(json!(0), true), (json!(100), true), (json!(50), true), (json!(-1), false), (json!(101), false)]
    {
        agree(&v, with(json!({"probability": value})), ok);
    }
    agree(&v, with(json!({"probability": 50.5})), false);
    agree(&v, with(json!({"probability": "50"})), false);
    // §5 across fields: won only 100, lost only 0.
    agree(&v, with(json!({"stage": "won", "probability": 100})), true);
    agree(&v, with(json!({"stage": "won", "probability": 90})), false);
    agree(&v, with(json!({"stage": "lost", "probability": 0})), true);
    agree(&v, with(json!({"stage": "lost", "probability": 10})), false);
}

#[test]
fn estimated_value_bounds() {
    let value = property("CreateOpportunityParams", "estimatedValue");
    let max = MAX_ESTIMATED_VALUE_CENTS as f64 / 100.0;
    assert_eq!(max, 1e12);
    assert_eq!(as_f64(value.get("maximum")), Some(max), "estimatedValue.maximum vs MAX_ESTIMATED_VALUE_CENTS / 100");
    assert_eq!(as_f64(value.get("minimum")), Some(0.0));
    assert_eq!(as_f64(value.get("multipleOf")), Some(0.01), "at most 2 decimal places");
    assert_eq!(
        as_f64(property("Opportunity", "estimatedValue").get("maximum")),
        Some(max),
        "Opportunity.estimatedValue.maximum"
    );
    let v = validator("CreateOpportunityParams");
    for (value, ok) in [
        (json!(0), true),
        (json!(0.07), true),
        (json!(125000.5), true),
        (json!(999999999999.99_f64), true),
        (json!(MAX_ESTIMATED_VALUE_CENTS / 100), true),
        (json!(1000000000000.01_f64), false),
        (json!(MAX_ESTIMATED_VALUE_CENTS / 100 + 1), false),
        (json!(-0.01), false),
        (json!(1.005), false),
        (json!("12"), false),
    ] {
        agree(&v, with(json!({"estimatedValue": value})), ok);
    }
}

#[test]
fn idempotency_key_bounds() {
    let v = validator("CreateOpportunityParams");
    agree(&v, with(json!({"idempotencyKey": "k"})), true);
    agree(&v, with(json!({"idempotencyKey": "~".repeat(255)})), true);
    agree(&v, with(json!({"idempotencyKey": " !\"#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}~"})), true);
    agree(&v, with(json!({"idempotencyKey": "k".repeat(256)})), false);
    agree(&v, with(json!({"idempotencyKey": ""})), false);
    agree(&v, with(json!({"idempotencyKey": "tab\there"})), false);
    agree(&v, with(json!({"idempotencyKey": "\u{7f}"})), false);
    agree(&v, with(json!({"idempotencyKey": "clé"})), false);
}

#[test]
fn uuids_and_date_times_agree() {
    let v = validator("CreateOpportunityParams");
    for field in ["customerId", "primaryContactId", "siteId", "ownerUserId"] {
        agree(&v, with(json!({ field: "550e8400-e29b-41d4-a716-446655440000" })), true);
        agree(&v, with(json!({ field: "550E8400-E29B-41D4-A716-446655440000" })), true);
        agree(&v, with(json!({ field: "550e8400e29b41d4a716446655440000" })), false);
        agree(&v, with(json!({ field: "not a uuid" })), false);
        agree(&v, with(json!({ field: 42 })), false);
    }
    for field in ["expectedCloseDate", "nextStepDate", "bidDueDate"] {
        for (value, ok) in [
            ("2026-12-01T09:30:00+02:00", true),
            ("2026-12-01T07:30:00Z", true),
            ("2026-12-01T07:30:00.125Z", true),
            ("1970-01-01T00:00:00Z", true),
            ("2200-12-31T23:59:59Z", true),
            ("2026-12-01", false),
            ("2026-12-01T09:30:00", false),
            ("2026-13-01T00:00:00Z", false),
            ("1969-12-31T23:59:59Z", false),
            ("2201-01-01T00:00:00Z", false),
            ("2026-12-01t07:30:00z", true),
            ("2016-12-31T23:59:60Z", false),
            ("2026-06-15T12:34:60Z", false),
            ("2026-12-01T09:30:00\u{2212}02:00", false),
            ("2026-12-01T09:30:00+0200", false),
            ("2026-12-01 09:30:00Z", false),
            ("2026-12-01T09:30:00.Z", false),
        ] {
            agree(&v, with(json!({ field: value })), ok);
        }
    }
}

#[test]
fn rules_across_fields_agree() {
    let v = validator("CreateOpportunityParams");
    agree(&v, with(json!({"stage": "lost", "lostReasonCategory": "price"})), true);
    agree(&v, with(json!({"stage": "lost", "probability": 0, "lostReasonCategory": "price"})), true);
    agree(&v, with(json!({"lostReasonCategory": "price"})), false);
    agree(&v, with(json!({"stage": "won", "lostReasonCategory": "price"})), false);
    agree(&v, with(json!({"pipeline_type": "retrofit"})), false);
}

#[test]
fn every_field_has_its_documented_type() {
    // One valid value per field from the code's point of view: the document must accept each.
    let v = validator("CreateOpportunityParams");
    let samples = json!({
        "customerId": "550e8400-e29b-41d4-a716-446655440000",
        "primaryContactId": "550e8400-e29b-41d4-a716-446655440001",
        "siteId": "550e8400-e29b-41d4-a716-446655440002",
        "title": "Chiller retrofit",
        "stage": "proposal",
        "pipelineType": "expansion",
        "source": "trade_show",
        "estimatedValue": 19.99,
        "expectedCloseDate": "2027-03-31T19:00:00+02:00",
        "probability": 40,
        "solutionFamilies": ["HVAC", "BMS"],
        "scopeSummary": "Scope",
        "competitorNotes": "Notes",
        "winLossReason": "Reason",
        "nextStepDescription": "Call",
        "nextStepDate": "2026-12-01T09:30:00Z",
        "bidDueDate": "2026-12-15T12:00:00Z",
        "budgetConfirmed": true,
        "priority": "urgent",
        "lostReasonCategory": null,
        "technicalRequirements": "Requirements",
        "ownerUserId": "550e8400-e29b-41d4-a716-446655440003",
        "workspaceId": "550e8400-e29b-41d4-a716-446655440004",
        "visibilityMode": "shared",
        "idempotencyKey": "retry-1",
    });
    assert_eq!(keys(samples.as_object().unwrap()), strings(&create_fields()), "a sample for every field");
    agree(&v, samples.clone(), true);
    // A value of the wrong JSON type is refused by both, field by field.
    for field in &create_fields() {
        let wrong = match samples[*field] {
            Value::String(_) => json!(12),
            Value::Bool(_) => json!("true"),
            Value::Number(_) => json!("12"),
            Value::Array(_) => json!({"0": "HVAC"}),
            _ => json!([]),
        };
        agree(&v, with(json!({ *field: wrong })), false);
    }
}

// --- 2. errors -------------------------------------------------------------------------------------

#[test]
fn the_error_schema_maps_each_code_to_its_name_and_status() {
    let codes: BTreeSet<i32> = CODES.iter().copied().collect();
    let mut names: BTreeSet<String> = codes.iter().map(|c| trpc_name(*c).0.to_string()).collect();
    names.insert(ApiError::Unavailable { request_id: Uuid::nil() }.name().to_string());
    let documented_names: BTreeSet<String> = enum_values(property("ErrorData", "code")).unwrap().into_iter().collect();
    assert_eq!(documented_names, names, "ErrorData.code.enum vs trpc_name() of every code and SERVICE_UNAVAILABLE");

    // The document maps each code to exactly the data.code and httpStatus of trpc_name().
    let v = validator("JsonRpcError");
    for code in &codes {
        let (name, status) = trpc_name(*code);
        for (other, other_status) in names.iter().map(|n| (n.as_str(), status)).chain([(name, 599)]) {
            let mut data = json!({"code": other, "httpStatus": other_status, "fieldErrors": {}, "formErrors": [],
                                   "requestId": Uuid::nil().to_string()});
            if other == "SERVICE_UNAVAILABLE" {
                data["httpStatus"] = json!(503);
                data["retryable"] = json!(true);
            }
            let error = json!({"code": code, "message": "m", "data": data});
            let expected =
                (other == name && other_status == status) || (*code == -32603 && other == "SERVICE_UNAVAILABLE");
            let found = problems(&v, &error);
            assert_eq!(found.is_empty(), expected, "error {error}: {found:?}");
        }
    }
}

#[test]
fn every_error_the_code_makes_fits_the_error_schema() {
    let mut failure = ValidationFailure::default();
    failure.field("title", "must not be empty");
    failure.field("solutionFamilies.2", "must be at most 100 characters");
    failure.form("unknown field \"pipeline_type\"");
    let id = Uuid::now_v7();
    let errors = [
        ApiError::Parse,
        ApiError::BadRequest("empty batch".into()),
        ApiError::PayloadTooLarge("x".into()),
        ApiError::MethodNotFound,
        ApiError::InvalidParams(failure),
        ApiError::InvalidParams(ValidationFailure::default()),
        ApiError::Unauthorized("x".into()),
        ApiError::Forbidden("x".into()),
        ApiError::NotFound("x".into()),
        ApiError::Conflict {
            message: "x".into(),
            reason: Some("idempotency_key_reused"),
            retryable: false,
            current_version: None,
        },
        ApiError::Conflict { message: "x".into(), reason: None, retryable: true, current_version: None },
        ApiError::Unavailable { request_id: id },
        ApiError::Internal { request_id: id },
    ];
    let v = validator("JsonRpcErrorResponse");
    for error in errors {
        let what = format!("{error:?}");
        let object = serde_json::to_value(error.into_error_object()).unwrap();
        assert_valid(&v, &json!({"jsonrpc": "2.0", "id": 1, "error": object}), &what);
    }
}

// --- 3. real answers -------------------------------------------------------------------------------

/// Params with every field set.
fn full_params() -> Value {
    json!({
        "customerId": "550E8400-E29B-41D4-A716-446655440000",
        "primaryContactId": "550e8400-e29b-41d4-a716-446655440001",
        "siteId": "550e8400-e29b-41d4-a716-446655440002",
        "title": "  Chiller retrofit, Building C  ",
        "stage": "lost",
        "pipelineType": "retrofit",
        "source": "referral",
        "estimatedValue": 125000.07,
        "expectedCloseDate": "2027-03-31T19:00:00.125+02:00",
        "probability": 0,
        "solutionFamilies": [" HVAC ", "BMS"],
        "scopeSummary": "Replace two chillers",
        "competitorNotes": "Two bidders",
        "winLossReason": "Price",
        "nextStepDescription": "Debrief",
        "nextStepDate": "2026-12-01T09:30:00Z",
        "bidDueDate": "2026-12-15T12:00:00Z",
        "budgetConfirmed": true,
        "priority": "high",
        "lostReasonCategory": "price",
        "technicalRequirements": "R-513A",
        "ownerUserId": "550e8400-e29b-41d4-a716-446655440003",
        "visibilityMode": "shared",
        "idempotencyKey": "openapi-full-1",
    })
}

/// The schema of the JSON body of `POST /` for an HTTP status.
fn response_validator(status: u16) -> Validator {
    let pointer = format!("/paths/~1/post/responses/{status}/content/application~1json/schema");
    assert!(document().pointer(&pointer).is_some(), "openapi.yaml documents no JSON body for HTTP {status} of POST /");
    validator_at(&pointer)
}

#[tokio::test]
async fn a_real_create_answer_is_an_opportunity() {
    let app = spawn_app().await;
    let opportunity = validator("Opportunity");
    let answer = validator("CreateOpportunityResponse");
    let body = response_validator(200);
    for params in [valid_params(), full_params()] {
        let (status, response) = app.post(&request(json!(1), CREATE, params.clone()), &app.token()).await;
        assert_eq!(status, 200, "{response}");
        let result = response["result"].as_object().unwrap_or_else(|| panic!("a result: {response}"));
        assert_eq!(
            keys(result),
            keys(properties("Opportunity")),
            "the keys of a real answer vs Opportunity.properties"
        );
        let required: BTreeSet<String> = schema("Opportunity")["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(keys(result), required, "the keys of a real answer vs Opportunity.required");
        assert_valid(&opportunity, &response["result"], "a create result");
        assert_valid(&answer, &response, "a create answer");
        assert_valid(&body, &response, "a create answer (as the body of HTTP 200)");
    }
}

#[tokio::test]
async fn a_real_validation_error_fits_the_error_schema() {
    let app = spawn_app().await;
    // The refused create of CONTRACT.md §7.
    let params = json!({"customerId": "550e8400-e29b-41d4-a716-446655440000", "title": "   ",
                        "pipeline_type": "retrofit", "probability": 150});
    let (status, response) = app.post(&request(json!(2), CREATE, params), &app.token()).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["error"]["code"], -32602, "{response}");
    assert_valid(&validator("JsonRpcErrorResponse"), &response, "a validation error");
    assert_valid(&response_validator(200), &response, "a validation error (as the body of HTTP 200)");
    let data = &response["error"]["data"];
    assert!(data["fieldErrors"]["title"].is_array() && data["fieldErrors"]["probability"].is_array(), "{response}");
    assert!(data["formErrors"].as_array().is_some_and(|e| !e.is_empty()), "{response}");
}

/// Request headers, name and value.
type Headers<'a> = Vec<(&'a str, &'a str)>;

/// Every kind of answer `POST /` gives has a documented status and fits its documented schema.
#[tokio::test]
async fn real_answers_of_every_kind_fit_the_document() {
    let app = spawn_app_with(&["--max-request-bytes", "4096"]).await;
    let token = app.token();
    let auth = format!("Bearer {token}");
    let other = Uuid::new_v4().to_string();
    let mut keyed = valid_params();
    keyed["idempotencyKey"] = json!("openapi-conflict");
    let mut keyed_other = keyed.clone();
    keyed_other["title"] = json!("Another title");
    let cases: Vec<(&str, String, Headers<'_>)> = vec![
        ("create", request(json!(1), CREATE, valid_params()).to_string(), vec![("authorization", &auth)]),
        (
            "create, params in an array",
            request(json!("a"), CREATE, json!([valid_params()])).to_string(),
            vec![("authorization", &auth)],
        ),
        ("idempotent create", request(json!(2), CREATE, keyed.clone()).to_string(), vec![("authorization", &auth)]),
        ("idempotent replay", request(json!(3), CREATE, keyed).to_string(), vec![("authorization", &auth)]),
        ("key reused", request(json!(4), CREATE, keyed_other).to_string(), vec![("authorization", &auth)]),
        ("no token", request(json!(5), CREATE, valid_params()).to_string(), vec![]),
        ("bad token", request(json!(6), CREATE, valid_params()).to_string(), vec![("authorization", "Bearer x.y.z")]),
        (
            "foreign workspace",
            request(json!(7), CREATE, valid_params()).to_string(),
            vec![("authorization", &auth), ("x-workspace-id", &other)],
        ),
        (
            "unknown method",
            request(json!(8), "opportunity.nope", json!({})).to_string(),
            vec![("authorization", &auth)],
        ),
        ("invalid params", request(json!(9), CREATE, json!({"title": ""})).to_string(), vec![("authorization", &auth)]),
        ("params not an object", request(json!(10), CREATE, json!(5)).to_string(), vec![("authorization", &auth)]),
        (
            "batch",
            json!([request(json!(11), CREATE, valid_params()), request(json!(12), "x.y", json!({})), 5]).to_string(),
            vec![("authorization", &auth)],
        ),
        ("empty batch", "[]".to_string(), vec![("authorization", &auth)]),
        (
            "notification",
            json!({"jsonrpc": "2.0", "method": CREATE, "params": valid_params()}).to_string(),
            vec![("authorization", &auth)],
        ),
        (
            "batch of notifications",
            json!([{"jsonrpc": "2.0", "method": "x"}, {"jsonrpc": "2.0", "method": "y"}]).to_string(),
            vec![("authorization", &auth)],
        ),
        ("not JSON", "{\"jsonrpc\":".to_string(), vec![("authorization", &auth)]),
        ("not a request", "{\"foo\": 1}".to_string(), vec![("authorization", &auth)]),
        ("a JSON string", "\"opportunity.create\"".to_string(), vec![("authorization", &auth)]),
        ("empty body", String::new(), vec![("authorization", &auth)]),
        ("too large", format!("{{\"x\": \"{}\"}}", "x".repeat(5000)), vec![("authorization", &auth)]),
    ];
    for (what, body, headers) in cases {
        let (status, response) = app.post_raw(body.clone(), &headers).await;
        if status == 204 {
            let documented = document().pointer("/paths/~1/post/responses/204");
            assert!(
                documented.is_some_and(|r| r.get("content").is_none()),
                "openapi.yaml documents 204 without a body"
            );
            assert_eq!(response, json!(""), "{what}: HTTP 204 has no body");
            continue;
        }
        let v = response_validator(status);
        assert_valid(&v, &response, &format!("the answer to {what} (HTTP {status}, body {body:.200})"));
    }
}

/// What the service takes and answers, the document takes too: an answer with an
/// `estimatedValue` that binary floats cannot divide by 0.01 (0.07), the members of `data`
/// that some errors carry (`currentVersion`, `resumeFrom`), and an unsubscribe that names its
/// subscription as an object in a one-element array.
#[tokio::test]
async fn the_document_takes_what_the_service_takes() {
    let app = spawn_app().await;
    let token = app.token();
    let mut params = valid_params();
    params["estimatedValue"] = json!(0.07);
    let (_, created) = app.post(&request(json!(1), CREATE, params), &token).await;
    assert_eq!(created["result"]["estimatedValue"], json!(0.07), "{created}");
    assert_valid(&validator("CreateOpportunityResponse"), &created, "a create answer with estimatedValue 0.07");
    let stale = json!({"id": created["result"]["id"], "expectedVersion": 5, "title": "Stale"});
    let (_, refused) = app.post(&request(json!(2), "opportunity.update", stale), &token).await;
    assert_eq!(refused["error"]["data"]["currentVersion"], 1, "{refused}");
    assert_valid(&response_validator(200), &refused, "a version_mismatch answer");
    assert_eq!(property("ErrorData", "currentVersion")["type"], "integer");
    assert_eq!(property("ErrorData", "resumeFrom")["type"], "string");
    let (request_schema, _) = method_schemas("opportunity.unsubscribe");
    for params in [json!({"subscription": "7"}), json!(["7"]), json!([{"subscription": "7"}])] {
        let unsubscribe = json!({"jsonrpc": "2.0", "id": 3, "method": "opportunity.unsubscribe", "params": params});
        assert_valid(&validator(&request_schema), &unsubscribe, "an unsubscribe the service takes");
    }
}

#[tokio::test]
async fn probes_are_documented() {
    let app = spawn_app().await;
    for path in ["/health", "/ready", "/metrics"] {
        let operation = document()
            .pointer(&format!("/paths/{}/get", path.replace('/', "~1")))
            .unwrap_or_else(|| panic!("openapi.yaml documents no GET {path}"));
        assert_eq!(operation["security"], json!([]), "GET {path} needs no token");
        let response = app.http.get(format!("http://{}{path}", app.addr)).send().await.unwrap();
        let status = response.status().as_u16();
        let documented = operation["responses"].get(status.to_string());
        assert!(documented.is_some(), "GET {path} answered HTTP {status}, which openapi.yaml does not document");
        let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
        let media = content_type.split(';').next().unwrap().trim().to_string();
        assert!(
            documented.unwrap()["content"].get(&media).is_some(),
            "GET {path}: content type {content_type} is not documented"
        );
    }
}

/// The request schema of `method`, through `JsonRpcRequest`'s discriminator (`<Method>Request`),
/// and the name of its answer's schema (`<Method>Response`).
fn method_schemas(method: &str) -> (String, String) {
    let mapping = document()
        .pointer("/components/schemas/JsonRpcRequest/discriminator/mapping")
        .expect("JsonRpcRequest tells the methods apart by `method`");
    let request = mapping[method]
        .as_str()
        .unwrap_or_else(|| panic!("JsonRpcRequest has no request schema for {method}"))
        .strip_prefix("#/components/schemas/")
        .unwrap()
        .to_string();
    let prefix = request.strip_suffix("Request").unwrap_or_else(|| panic!("{request} is not <Method>Request"));
    assert_eq!(schema(&request)["properties"]["method"]["const"], json!(method), "{request}.method");
    (request.clone(), format!("{prefix}Response"))
}

/// For every method's params (HTTP ones), each field sent as `null` beside valid params: the
/// service refuses it (a field error on it) exactly when the generated schema does. The
/// wire types say which fields may be `null`; this is where a wrong one shows.
#[tokio::test]
async fn null_is_refused_by_the_service_exactly_where_the_document_refuses_it() {
    let app = spawn_app().await;
    let token = app.token();
    let created = app.post(&request(json!(1), "opportunity.create", valid_params()), &token).await.1;
    let id = created["result"]["id"].as_str().unwrap().to_string();
    let bases = [
        ("opportunity.get", json!({"id": id})),
        ("opportunity.update", json!({"id": id, "expectedVersion": 1})),
        ("opportunity.archive", json!({"id": id, "expectedVersion": 1})),
        ("opportunity.restore", json!({"id": id, "expectedVersion": 1})),
        ("opportunity.list", json!({})),
        ("opportunity.changes", json!({})),
    ];
    let mut checked = 0;
    for (method, base) in bases {
        let (request_schema, _) = method_schemas(method);
        let params_ref = schema(&request_schema)["properties"]["params"]["oneOf"][0]["$ref"].as_str().unwrap();
        let params_name = params_ref.rsplit('/').next().unwrap();
        let v = validator(params_name);
        for field in properties(params_name).keys() {
            let mut params = base.clone();
            params[field.as_str()] = Value::Null;
            let documented = problems(&v, &params).is_empty();
            let answer = app.post(&request(json!(1), method, params.clone()), &token).await.1;
            let refused = answer["error"]["data"]["fieldErrors"].get(field.as_str()).is_some();
            assert_eq!(
                !refused,
                documented,
                "{method} {params}: the service {} it, {params_name} {}: {answer}",
                if refused { "refuses" } else { "takes" },
                if documented { "allows it" } else { "refuses it" },
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked} fields checked");
}

/// Each method, called for real: its request fits the document's request schema for it (and the
/// request body's), and its answer the schema of its answer (and the response body's). The
/// methods of the WebSocket answer over HTTP with the error the document gives them.
#[tokio::test]
async fn every_method_is_typed_as_it_answers() {
    let app = spawn_app().await;
    let token = app.token();
    let body = validator_at("/paths/~1/post/requestBody/content/application~1json/schema");
    let answers = response_validator(200);
    let methods: BTreeSet<String> = document()
        .pointer("/components/schemas/JsonRpcRequest/discriminator/mapping")
        .and_then(Value::as_object)
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut called = BTreeSet::new();
    let mut call = async |method: &str, params: Option<Value>| {
        let mut request = json!({"jsonrpc": "2.0", "id": called.len() + 1, "method": method});
        if let Some(params) = params {
            request["params"] = params;
        }
        let (request_schema, response_schema) = method_schemas(method);
        assert_valid(&validator(&request_schema), &request, &format!("a {method} request ({request_schema})"));
        assert_valid(&body, &request, &format!("a {method} request (as the body of POST /)"));
        let (status, response) = app.post(&request, &token).await;
        assert_eq!(status, 200, "{method}: {response}");
        assert_valid(&answers, &response, &format!("the answer to {method} (as the body of HTTP 200)"));
        if response.get("result").is_some() {
            assert_valid(
                &validator(&response_schema),
                &response,
                &format!("the answer to {method} ({response_schema})"),
            );
            let others: Vec<String> = methods
                .iter()
                .map(|m| method_schemas(m).1)
                .filter(|r| *r != response_schema && problems(&validator(r), &response).is_empty())
                .collect();
            // Opportunity answers fit each other's schemas; no other answer fits another's.
            let opportunity =
                ["Create", "Get", "Update", "Archive", "Restore"].map(|v| format!("{v}OpportunityResponse"));
            assert!(
                others.iter().all(|o| opportunity.contains(o) && opportunity.contains(&response_schema)),
                "the answer to {method} also fits {others:?}"
            );
        } else {
            assert_valid(&validator("JsonRpcErrorResponse"), &response, &format!("the error answer to {method}"));
        }
        called.insert(method.to_string());
        response
    };
    let created = call("opportunity.create", Some(valid_params())).await;
    let id = created["result"]["id"].as_str().unwrap().to_string();
    call("opportunity.get", Some(json!({"id": id}))).await;
    call("opportunity.get", Some(json!([{"id": id}]))).await;
    call("opportunity.list", None).await;
    call("opportunity.list", Some(json!({"orderBy": "estimatedValue", "limit": 1}))).await;
    let updated = call("opportunity.update", Some(json!({"id": id, "expectedVersion": 1, "stage": "proposal"}))).await;
    assert_eq!(updated["result"]["version"], 2, "{updated}");
    call("opportunity.archive", Some(json!({"id": id, "expectedVersion": 2}))).await;
    call("opportunity.restore", Some(json!({"id": id, "expectedVersion": 3}))).await;
    let changes = call("opportunity.changes", Some(json!({"limit": 10}))).await;
    assert_eq!(changes["result"]["events"].as_array().map(Vec::len), Some(4), "{changes}");
    let subscribed = call("opportunity.subscribe", Some(json!({}))).await;
    assert_eq!(subscribed["error"]["code"], -32600, "WebSocket only: {subscribed}");
    let unsubscribed = call("opportunity.unsubscribe", Some(json!([1]))).await;
    assert_eq!(unsubscribed["error"]["code"], -32600, "WebSocket only: {unsubscribed}");
    let discovered = call("rpc.discover", None).await;
    assert_eq!(discovered["result"]["openrpc"], "1.3.2");
    assert_eq!(called, methods, "every method of the document was called");

    // The request schemas are the methods': params of another method, or none where some are
    // needed, break them, and the service refuses them too.
    let (get_schema, _) = method_schemas("opportunity.get");
    for (what, params) in [("create's params", Some(valid_params())), ("no params", None)] {
        let mut request = json!({"jsonrpc": "2.0", "id": 1, "method": "opportunity.get"});
        if let Some(params) = params {
            request["params"] = params;
        }
        assert!(
            !problems(&validator(&get_schema), &request).is_empty(),
            "opportunity.get with {what} fits {get_schema}"
        );
        assert!(!problems(&body, &request).is_empty(), "opportunity.get with {what} fits the request body");
        let (_, response) = app.post(&request, &token).await;
        assert_eq!(response["error"]["code"], -32602, "opportunity.get with {what}: {response}");
    }
}

// --- 4. regressions: what schemathesis found ------------------------------------------------------

/// schemathesis: `[{"jsonrpc":"2.0","method":"opportunity.create","params":{…}}]`, a batch of one
/// notification, was answered `[{"id":null,"error":{"code":-32600,…}}]`. Every one-element batch
/// was refused so: the id probe of src/http.rs (`swap_unsupported_ids`) reads `[{…}]` as an
/// `IdProbe` struct in sequence form, takes the whole request object for its id, and, since the
/// object's text contains an `e`, swaps the whole object for a placeholder string.
#[tokio::test]
async fn one_element_batch_is_answered_per_item() {
    let app = spawn_app().await;
    let token = app.token();
    let (status, response) = app.post(&json!([request(json!(1), CREATE, valid_params())]), &token).await;
    assert_eq!(status, 200, "{response}");
    let answers = response.as_array().unwrap_or_else(|| panic!("a batch is answered with an array: {response}"));
    assert_eq!(answers.len(), 1, "{response}");
    assert_eq!(answers[0]["id"], 1, "{response}");
    assert!(answers[0]["result"]["id"].is_string(), "the one create of the batch is made: {response}");
    assert_eq!(app.count(None).await, 1);

    let notification = json!({"jsonrpc": "2.0", "method": CREATE, "params": valid_params()});
    let (status, response) = app.post(&json!([notification]), &token).await;
    assert_eq!(status, 204, "{response}");
    assert_eq!(response, json!(""), "a batch of one notification gets no answer: {response}");
}

/// schemathesis: `{"jsonrpc":"2.0","id":{},"method":"opportunity.create","params":{…}}` got no
/// answer (jsonrpsee took it for a notification) and created an opportunity; `"id": false` was
/// echoed as `false`. JSON-RPC 2.0 §4: an id is a string, a number or null; any other makes the
/// request invalid (-32600, answered with id null), and an invalid request runs nothing.
#[tokio::test]
async fn ids_json_rpc_forbids_make_an_invalid_request() {
    let app = spawn_app().await;
    let token = app.token();
    for id in [json!({}), json!([]), json!([1]), json!(true), json!(false), json!({"a": 1})] {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": CREATE, "params": valid_params()});
        let (status, response) = app.post(&body, &token).await;
        assert_eq!(status, 200, "id {id}: {response}");
        assert_eq!(response["error"]["code"], -32600, "id {id}: expected an invalid request, got {response}");
        assert_eq!(response["id"], Value::Null, "id {id}: {response}");
        // The same inside a batch.
        let (_, response) = app.post(&json!([body, request(json!(1), "x.y", json!({}))]), &token).await;
        let answers = response.as_array().unwrap_or_else(|| panic!("id {id} in a batch: {response}"));
        assert_eq!(answers.len(), 2, "id {id} in a batch: both items are answered: {response}");
        assert!(
            answers.iter().any(|a| a["id"].is_null() && a["error"]["code"] == -32600),
            "id {id} in a batch: {response}"
        );
    }
    assert_eq!(app.count(None).await, 0, "an invalid request creates nothing");
}

/// schemathesis: a batch item with `"id": 5445650358997617511235584` got no answer (jsonrpsee
/// reads numeric ids as u64 only, and src/http.rs swaps only ids with `-`, `.`, `e` or `E`).
/// JSON-RPC 2.0 allows any number; the service echoes ids as written.
#[tokio::test]
async fn numeric_ids_beyond_u64_are_echoed() {
    let app = spawn_app().await;
    let auth = format!("Bearer {}", app.token());
    for id in ["18446744073709551616", "5445650358997617511235584", "100000000000000000000000000000000000000"] {
        let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"opportunity.nope","params":{{}}}}"#);
        let (status, response) = app.post_raw(body, &[("authorization", &auth)]).await;
        assert_eq!(status, 200, "id {id}: {response}");
        let expected: Value = serde_json::from_str(id).unwrap();
        assert_eq!(response["id"], expected, "id {id} is echoed: {response}");
        assert_eq!(response["error"]["code"], -32601, "id {id}: {response}");
        let batch = format!(
            r#"[{{"jsonrpc":"2.0","id":{id},"method":"opportunity.nope"}},{{"jsonrpc":"2.0","id":1,"method":"x"}}]"#
        );
        let (_, response) = app.post_raw(batch, &[("authorization", &auth)]).await;
        let answers = response.as_array().unwrap_or_else(|| panic!("id {id} in a batch: {response}"));
        assert!(answers.iter().any(|a| a["id"] == expected), "id {id} in a batch is answered: {response}");
    }
}

/// schemathesis (`unsupported_method`): `TRACE /health` and `PUT /` were answered 405 without an
/// `Allow` header, which RFC 9110 §15.5.6 requires ("POST is required" even for /health).
#[tokio::test]
async fn method_not_allowed_names_the_allowed_methods() {
    let app = spawn_app().await;
    let cases = [("/health", "GET"), ("/ready", "GET"), ("/metrics", "GET"), ("/", "POST")];
    for (path, allowed) in cases {
        for method in ["PUT", "DELETE", "PATCH", "TRACE"] {
            let response = app
                .http
                .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("http://{}{path}", app.addr))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 405, "{method} {path}");
            let allow = response.headers().get("allow").map(|v| v.to_str().unwrap().to_string());
            assert!(
                allow.as_deref().is_some_and(|a| a.split(',').any(|m| m.trim() == allowed)),
                "{method} {path}: 405 needs an Allow header naming {allowed}; got {allow:?}"
            );
        }
    }
}

/// schemathesis (`unsupported_method`): `POST /health` was answered 415 where 405 was due, and with
/// a JSON body it ran the call: JSON-RPC was served on every path, so `POST /health`,
/// `POST /metrics` or `POST /nope` created opportunities. CONTRACT.md §2: JSON-RPC is `POST /`.
#[tokio::test]
async fn json_rpc_is_served_on_the_root_path_only() {
    let app = spawn_app().await;
    let auth = format!("Bearer {}", app.token());
    let body = request(json!(1), CREATE, valid_params()).to_string();
    for (path, status) in [("/health", 405), ("/ready", 405), ("/metrics", 405), ("/nope", 404), ("/v1/", 404)] {
        let response = app
            .http
            .post(format!("http://{}{path}", app.addr))
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let got = response.status().as_u16();
        let allow = response.headers().get("allow").map(|v| v.to_str().unwrap().to_string());
        let text = response.text().await.unwrap();
        assert_eq!(got, status, "POST {path}: {text:.300}");
        if status == 405 {
            assert!(allow.as_deref().is_some_and(|a| a.contains("GET")), "POST {path}: Allow {allow:?}");
        }
    }
    assert_eq!(app.count(None).await, 0, "no call runs outside POST /");
}

/// schemathesis: `{"jsonrpc": -7.5e-237, "id": 2.355555378987275e+111, …}` was answered with
/// `"id": 2.3555553789872752e+111`, another number. src/http.rs puts the original ids back into
/// the answer and only then rewrites jsonrpsee's own errors (invalid requests, parse errors)
/// through `serde_json::Value`, so the ids of those answers went through f64: `1.50` came back
/// `1.5`, `1e2` `100.0`, `-0` `-0.0`, and, without serde_json's `float_roundtrip` (the release
/// build has it off), some as a different number. Putting the ids back after the rewrite fixes it.
#[tokio::test]
async fn ids_of_invalid_requests_are_echoed_as_written() {
    let app = spawn_app().await;
    for id in ["-7", "1.50", "1e2", "-0", "2.355555378987275e+111", "0.1"] {
        let body = format!(r#"{{"jsonrpc":"1.0","id":{id},"method":"x"}}"#);
        let response =
            app.http.post(app.url()).header("content-type", "application/json").body(body).send().await.unwrap();
        let text = response.text().await.unwrap();
        let answer: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("id {id}: {text}"));
        assert_eq!(answer["error"]["code"], -32600, "id {id}: {text}");
        assert!(text.contains(&format!(r#""id":{id}"#)), "id {id} must come back as written: {text}");
    }
}

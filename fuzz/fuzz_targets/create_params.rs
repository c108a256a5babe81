//! Fuzzes the params parser and validator of `opportunity.create`
//! (`opportunity_service::rpc::opportunity::parse_create`) with the bytes of a JSON-RPC request.
//!
//! Input layout: `BODY [0xFF IDEMPOTENCY-KEY [0xFF X-WORKSPACE-ID]]`. 0xFF never occurs in
//! UTF-8, so a plain request body is an input with no headers, and the seeds stay readable.
//! When BODY is a JSON object with a `params` member, that member's raw text is the params, as
//! jsonrpsee hands them to the method; otherwise BODY itself (lossily decoded when not UTF-8) is
//! tried as the params text, and an object without `params` is tried as absent params.
//!
//! Checked on every input:
//! - nothing panics (the server's own `expect`s on the success path included);
//! - a refusal, as `ApiError::InvalidParams(..).into_error_object()`, is CONTRACT.md §4's
//!   -32602 / BAD_REQUEST / 400 with `fieldErrors` keyed by the fields of `CREATE_FIELDS` (or
//!   `solutionFamilies.N`), each a non-empty list of messages, and `formErrors` a list of
//!   strings;
//! - an acceptance holds every rule of §5: required fields set, title trimmed (of white space
//!   and of what shows nothing) 1–200 characters without control characters, probability 0–100
//!   and consistent with the stage, solution families trimmed alike, unique, at most 50 of 1–100
//!   characters, texts at most 10,000 characters without NUL or control characters other than
//!   tab, line feed and carriage return,
//!   instants in the years 1970–2200 that survive their own output format, an estimated value
//!   that survives its own JSON, and an idempotency key of 1–255 printable ASCII characters
//!   that agrees with the header.
//!
//! Run: `bash .ci/fuzz` (or `RUSTC_BOOTSTRAP=1 cargo fuzz run create_params` in the repo root).

#![no_main]

use std::collections::HashSet;

use chrono::{Datelike, TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use opportunity_service::domain::opportunity::{
    CreateOpportunity, Money, Opportunity, Stage, format_instant, parse_instant, trim_blank,
};
use opportunity_service::error::{ApiError, ValidationFailure};
use opportunity_service::rpc::opportunity::{CREATE_FIELDS, parse_create};
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

/// The members of a JSON-RPC request this target cares about.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0xFF);
    let body = parts.next().unwrap_or_default();
    let key_header = parts.next().map(|b| String::from_utf8_lossy(b).into_owned());
    let workspace_header = parts.next().map(|b| String::from_utf8_lossy(b).into_owned());

    let text = String::from_utf8_lossy(body);
    match serde_json::from_str::<Envelope<'_>>(&text) {
        Ok(envelope) => {
            check(envelope.params.map(RawValue::get), key_header.as_deref(), workspace_header.as_deref());
            // The same params under the other header combinations.
            check(envelope.params.map(RawValue::get), None, None);
        }
        Err(_) => check(Some(&text), key_header.as_deref(), workspace_header.as_deref()),
    }
});

fn check(params: Option<&str>, key_header: Option<&str>, workspace_header: Option<&str>) {
    let (input, failure) = parse_create(params, key_header, workspace_header);
    // Deterministic: the same call gives the same answer.
    let (again, failure_again) = parse_create(params, key_header, workspace_header);
    assert_eq!(failure, failure_again, "parse_create is deterministic");
    assert_eq!(input, again, "parse_create is deterministic");
    if failure.is_empty() {
        check_accepted(input, params, key_header, workspace_header);
    } else {
        check_refusal(&failure);
    }
}

/// A refusal in §4's shape.
fn check_refusal(failure: &ValidationFailure) {
    let object = ApiError::InvalidParams(failure.clone()).into_error_object();
    let value = serde_json::to_value(&object).expect("an error object serializes");
    assert_eq!(value["code"], -32602, "{value}");
    assert_eq!(value["message"], "Invalid params", "{value}");
    let data = value["data"].as_object().unwrap_or_else(|| panic!("error.data is an object: {value}"));
    assert_eq!(data["code"], "BAD_REQUEST", "{value}");
    assert_eq!(data["httpStatus"], 400, "{value}");
    let field_errors = data["fieldErrors"].as_object().unwrap_or_else(|| panic!("fieldErrors is an object: {value}"));
    for (field, messages) in field_errors {
        let known = CREATE_FIELDS.iter().any(|f| f == field)
            || field
                .strip_prefix("solutionFamilies.")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && n.parse::<usize>().is_ok());
        assert!(known, "fieldErrors key {field:?} is not a field of opportunity.create: {value}");
        let messages = messages.as_array().unwrap_or_else(|| panic!("fieldErrors.{field} is a list: {value}"));
        assert!(!messages.is_empty(), "fieldErrors.{field} is not empty: {value}");
        for message in messages {
            let message = message.as_str().unwrap_or_else(|| panic!("fieldErrors.{field}: strings: {value}"));
            assert!(!message.is_empty(), "fieldErrors.{field}: a message says something: {value}");
        }
    }
    let form_errors = data["formErrors"].as_array().unwrap_or_else(|| panic!("formErrors is a list: {value}"));
    for message in form_errors {
        assert!(message.as_str().is_some_and(|m| !m.is_empty()), "formErrors are messages: {value}");
    }
    assert!(!field_errors.is_empty() || !form_errors.is_empty(), "a refusal names a problem: {value}");
    // The answer is JSON that parses back (no invalid text sneaks into messages).
    let text = serde_json::to_string(&value).expect("serializes");
    assert_eq!(serde_json::from_str::<Value>(&text).expect("parses back"), value);
}

/// An acceptance that holds every rule of §5, and goes through the server's success path.
fn check_accepted(input: CreateOpportunity, params: Option<&str>, key_header: Option<&str>, workspace: Option<&str>) {
    let what = || format!("accepted params {params:?} with headers {key_header:?} / {workspace:?}: {input:#?}");
    assert!(input.customer_id.is_some(), "customerId is set: {}", what());
    assert!(input.pipeline_type.is_some(), "pipelineType is set: {}", what());
    let title = input.title.clone().unwrap_or_else(|| panic!("title is set: {}", what()));
    assert_eq!(title, trim_blank(&title), "the title is trimmed: {}", what());
    assert!(!title.chars().any(char::is_control), "no control characters in the title: {}", what());
    assert!((1..=200).contains(&title.chars().count()), "title of 1–200 characters: {}", what());

    let stage = input.stage.unwrap_or(Stage::Lead);
    if let Some(p) = input.probability {
        assert!((0..=100).contains(&p), "probability 0–100: {}", what());
        match stage {
            Stage::Won => assert_eq!(p, 100, "won means 100: {}", what()),
            Stage::Lost => assert_eq!(p, 0, "lost means 0: {}", what()),
            _ => {}
        }
    }
    if input.lost_reason_category.is_some() {
        assert_eq!(stage, Stage::Lost, "lostReasonCategory only with lost: {}", what());
    }
    if let Some(items) = &input.solution_families {
        assert!(items.len() <= 50, "at most 50 solution families: {}", what());
        let mut seen = HashSet::new();
        for item in items {
            assert_eq!(item, trim_blank(item), "solution families are trimmed: {}", what());
            assert!(!item.chars().any(char::is_control), "no control characters in a solution family: {}", what());
            assert!((1..=100).contains(&item.chars().count()), "solution family of 1–100 characters: {}", what());
            assert!(seen.insert(item), "no duplicate solution families: {}", what());
            assert!(!item.contains('\0'), "no NUL: {}", what());
        }
    }
    for text in [
        &input.scope_summary,
        &input.competitor_notes,
        &input.win_loss_reason,
        &input.next_step_description,
        &input.technical_requirements,
    ]
    .into_iter()
    .flatten()
    {
        assert!(text.chars().count() <= 10_000, "texts of at most 10,000 characters: {}", what());
        assert!(!text.contains('\0'), "no NUL in texts: {}", what());
        assert!(
            !text.chars().any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')),
            "texts hold no control characters but tab, LF and CR: {}",
            what()
        );
    }
    assert!(!title.contains('\0'), "no NUL in the title: {}", what());
    for instant in [&input.expected_close_date, &input.next_step_date, &input.bid_due_date].into_iter().flatten() {
        assert!((1970..=2200).contains(&instant.year()), "years 1970–2200: {}", what());
        assert_eq!(instant.timestamp_subsec_nanos() % 1000, 0, "instants are whole microseconds: {}", what());
        let formatted = format_instant(instant);
        assert!(formatted.ends_with('Z'), "returned in UTC with Z: {formatted}");
        assert_eq!(parse_instant(&formatted), Ok(*instant), "an instant survives its own output: {formatted}");
    }
    if let Some(money) = input.estimated_value {
        assert!((0..=100_000_000_000_000).contains(&money.cents()), "0 ≤ estimatedValue ≤ 1e12: {}", what());
        let json = serde_json::to_string(&money).expect("money serializes");
        assert_eq!(Money::parse_json_number(&json), Ok(money), "estimatedValue comes back equal: {json}");
    }
    if let Some(key) = &input.idempotency_key {
        assert!((1..=255).contains(&key.len()), "keys of 1–255 characters: {}", what());
        assert!(key.bytes().all(|b| (0x20..=0x7e).contains(&b)), "keys are printable ASCII: {}", what());
        if let Some(header) = key_header {
            assert_eq!(key, header, "the key agrees with the Idempotency-Key header: {}", what());
        }
    } else {
        assert!(key_header.is_none(), "a header key is the call's key: {}", what());
    }
    if let Some(header) = workspace {
        // The header counts when the params name no workspace (absent or null).
        let object = params.and_then(|p| match serde_json::from_str::<Value>(p).ok()? {
            Value::Array(mut items) if items.len() == 1 => Some(items.remove(0)),
            value => Some(value),
        });
        if let Some(Value::Object(members)) = object
            && members.get("workspaceId").is_none_or(Value::is_null)
        {
            let expected = Uuid::try_parse(header.trim()).ok();
            assert_eq!(input.workspace_id, expected, "the X-Workspace-Id header's workspace: {}", what());
        }
    }

    // What the server does next with an accepted input must not panic either: the stored
    // opportunity is built and serialized (the request fingerprint is made from it).
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 18, 30, 0).unwrap();
    let workspace_id = input.workspace_id.unwrap_or_else(Uuid::nil);
    let opportunity = Opportunity::new(input, workspace_id, Uuid::nil(), now)
        .unwrap_or_else(|| panic!("an accepted input makes an opportunity: {params:?}"));
    let answer = serde_json::to_value(&opportunity).expect("an opportunity serializes");
    assert_eq!(answer["title"], title, "the answer holds the trimmed title");
    assert_eq!(answer["version"], 1);
}

//! The envelope assertions every suite shares: a result, or a JSON-RPC error in the shape of
//! CONTRACT §4 (`error.code`, `error.message`, `error.data.code`, `error.data.httpStatus`).
//! Each takes `what`, the case being judged, which starts every failure message; a loop over
//! cases says which one failed.

use serde_json::{Value, json};

/// The `(data.code, data.httpStatus)` pairs §4 allows with each `error.code`.
pub fn contract_names(code: i64) -> &'static [(&'static str, u64)] {
    match code {
        -32700 => &[("PARSE_ERROR", 400)],
        -32600 | -32602 => &[("BAD_REQUEST", 400)],
        -32013 => &[("PAYLOAD_TOO_LARGE", 413)],
        -32601 | -32004 => &[("NOT_FOUND", 404)],
        -32001 => &[("UNAUTHORIZED", 401)],
        -32003 => &[("FORBIDDEN", 403)],
        -32009 => &[("CONFLICT", 409)],
        -32603 => &[("SERVICE_UNAVAILABLE", 503), ("INTERNAL_SERVER_ERROR", 500)],
        _ => &[],
    }
}

/// The result of a call that must succeed.
#[track_caller]
pub fn ok(response: &Value) -> &Value {
    assert!(response.get("error").is_none(), "expected a result: {response}");
    assert!(response.get("result").is_some(), "expected a result: {response}");
    &response["result"]
}

/// Asserts an error answer in §4's shape: no `result`, this `error.code`, a message, this
/// `data.code`, and the `data.httpStatus` §4 gives the pair. Returns `error.data`.
#[track_caller]
pub fn assert_refusal<'a>(response: &'a Value, code: i64, name: &str, what: &str) -> &'a Value {
    assert!(response.get("result").is_none(), "{what}: expected {name}, got a result: {response}");
    let error = &response["error"];
    assert_eq!(error["code"], code, "{what}: error.code of {response}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: error.message of {response}");
    assert_eq!(error["data"]["code"], name, "{what}: error.data.code of {response}");
    let status = contract_names(code).iter().find(|(n, _)| *n == name).map(|(_, status)| *status);
    let status = status.unwrap_or_else(|| panic!("{what}: {code} {name} is no row of §4"));
    assert_eq!(error["data"]["httpStatus"], status, "{what}: error.data.httpStatus of {response}");
    &error["data"]
}

/// [`assert_refusal`] of a JSON-RPC 2.0 answer to the request `id`.
#[track_caller]
pub fn assert_error<'a>(response: &'a Value, id: &Value, code: i64, name: &str, what: &str) -> &'a Value {
    assert_eq!(response["jsonrpc"], "2.0", "{what}: {response}");
    assert_eq!(&response["id"], id, "{what}: the id of {response}");
    assert_refusal(response, code, name, what)
}

/// [`assert_refusal`] with no case to name (the failing line says which); returns `error.data`.
#[track_caller]
pub fn err<'a>(response: &'a Value, code: i64, name: &str) -> &'a Value {
    assert_refusal(response, code, name, "the call")
}

/// Asserts a successful create answered to `id`: a result of version 1 whose id is a UUID v7.
/// Returns the result.
#[track_caller]
pub fn assert_created<'a>(response: &'a Value, id: &Value, what: &str) -> &'a Value {
    assert_eq!(response["jsonrpc"], "2.0", "{what}: {response}");
    assert_eq!(&response["id"], id, "{what}: the id of {response}");
    assert!(response.get("error").is_none(), "{what}: expected a created opportunity: {response}");
    let result = &response["result"];
    assert_eq!(result["version"], 1, "{what}: {response}");
    let new_id = result["id"].as_str().unwrap_or_else(|| panic!("{what}: result.id is a string: {response}"));
    let parsed = uuid::Uuid::parse_str(new_id).unwrap_or_else(|_| panic!("{what}: result.id is a UUID: {response}"));
    assert_eq!(parsed.get_version_num(), 7, "{what}: result.id is a UUID v7: {response}");
    result
}

/// Asserts a -32602 BAD_REQUEST with a non-empty list of messages on each of `fields`.
#[track_caller]
pub fn field_errors(response: &Value, fields: &[&str]) {
    let data = assert_refusal(response, -32602, "BAD_REQUEST", "a validation error");
    for field in fields {
        let messages = data["fieldErrors"][field].as_array();
        assert!(
            messages.is_some_and(|m| !m.is_empty() && m.iter().all(|m| m.as_str().is_some_and(|s| !s.is_empty()))),
            "messages on {field} expected: {response}"
        );
    }
}

/// The code and data of a WebSocket call that must fail with a JSON-RPC error.
#[track_caller]
pub fn ws_error(result: Result<Value, jsonrpsee::core::ClientError>) -> (i32, Value) {
    match result {
        Err(jsonrpsee::core::ClientError::Call(e)) => {
            let data = e.data().map(|raw| serde_json::from_str(raw.get()).expect("error data is JSON"));
            (e.code(), data.unwrap_or(Value::Null))
        }
        other => panic!("expected a JSON-RPC error answer, got {other:?}"),
    }
}

/// A WebSocket call's outcome in the shape of an HTTP answer (`result` or `error`), so that the
/// same assertions judge both transports.
#[track_caller]
pub fn ws_envelope(result: Result<Value, jsonrpsee::core::ClientError>) -> Value {
    match result {
        Ok(result) => json!({ "result": result }),
        Err(jsonrpsee::core::ClientError::Call(e)) => json!({
            "error": {
                "code": e.code(),
                "message": e.message(),
                "data": e.data().map(|d| serde_json::from_str::<Value>(d.get()).unwrap()),
            }
        }),
        Err(other) => panic!("the WebSocket call failed below JSON-RPC: {other}"),
    }
}

/// Asserts that a WebSocket call failed in §4's shape; returns `error.data`.
#[track_caller]
pub fn assert_ws_error(
    result: Result<Value, jsonrpsee::core::ClientError>,
    code: i64,
    name: &str,
    what: &str,
) -> Value {
    let envelope = ws_envelope(result);
    assert_refusal(&envelope, code, name, what).clone()
}

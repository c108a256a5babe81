//! The one error type of the RPC edge and its exhaustive mapping onto CONTRACT.md §4.
//!
//! Every failure a caller can see is an [`ApiError`]; [`ApiError::into_error_object`] is the only
//! place that turns one into a JSON-RPC error object. Errors that jsonrpsee produces on its own
//! (parse errors, unknown methods, oversized bodies) are rewritten by [`normalize_error_value`] so
//! that a caller can switch on `error.code` alone.

use std::collections::BTreeMap;

use jsonrpsee::types::ErrorObjectOwned;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

/// JSON-RPC code for a parse error (-32700).
pub const PARSE_ERROR: i32 = -32700;
/// JSON-RPC code for an invalid request (-32600).
pub const INVALID_REQUEST: i32 = -32600;
/// JSON-RPC code for an unknown method (-32601).
pub const METHOD_NOT_FOUND: i32 = -32601;
/// JSON-RPC code for params that fail to parse or validate (-32602).
pub const INVALID_PARAMS: i32 = -32602;
/// JSON-RPC code for internal failures and an unavailable database (-32603).
pub const INTERNAL_ERROR: i32 = -32603;
/// tRPC's code for a missing or bad token.
pub const UNAUTHORIZED: i32 = -32001;
/// tRPC's code for a caller without the grant.
pub const FORBIDDEN: i32 = -32003;
/// tRPC's code for a record out of reach.
pub const NOT_FOUND: i32 = -32004;
/// tRPC's code for a conflict.
pub const CONFLICT: i32 = -32009;
/// tRPC's code for a body or batch over the limit.
pub const PAYLOAD_TOO_LARGE: i32 = -32013;

/// Every code an answer can carry, in the order of §4's table.
pub const CODES: &[i32] = &[
    PARSE_ERROR,
    INVALID_REQUEST,
    PAYLOAD_TOO_LARGE,
    METHOD_NOT_FOUND,
    INVALID_PARAMS,
    UNAUTHORIZED,
    FORBIDDEN,
    NOT_FOUND,
    CONFLICT,
    INTERNAL_ERROR,
];

/// The tRPC name of an unavailable database or a refusal at the edge (code -32603, HTTP 503);
/// every other name is [`trpc_name`]'s.
pub const SERVICE_UNAVAILABLE: (&str, u16) = ("SERVICE_UNAVAILABLE", 503);

/// Validation problems in the shape of zod's `flatten()`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationFailure {
    /// Messages per camelCase field (`solutionFamilies.2` for array items).
    pub field_errors: BTreeMap<String, Vec<String>>,
    /// Problems that belong to no single field.
    pub form_errors: Vec<String>,
}

impl ValidationFailure {
    /// Records a problem with one field.
    pub fn field(&mut self, name: impl Into<String>, message: impl Into<String>) {
        self.field_errors.entry(name.into()).or_default().push(message.into());
    }

    /// Records a problem that belongs to no single field.
    pub fn form(&mut self, message: impl Into<String>) {
        self.form_errors.push(message.into());
    }

    /// Whether a field already has a problem (later rules on it are then skipped).
    pub fn has_field(&self, name: &str) -> bool {
        self.field_errors.contains_key(name)
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.field_errors.is_empty() && self.form_errors.is_empty()
    }

    /// `Ok(())` when nothing was recorded, the failure otherwise.
    pub fn into_result(self) -> Result<(), Self> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

/// Every failure a caller can see.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON.
    #[error("Parse error")]
    Parse,
    /// Not a JSON-RPC request, or an empty batch.
    #[error("Invalid request: {0}")]
    BadRequest(String),
    /// A body or batch over the configured limit.
    #[error("Payload too large: {0}")]
    PayloadTooLarge(String),
    /// No method of that name.
    #[error("Method not found")]
    MethodNotFound,
    /// Params that fail to parse or validate; every problem at once.
    #[error("Invalid params")]
    InvalidParams(ValidationFailure),
    /// No token, or a token that is not valid.
    #[error("Unauthorized: {0}")]
    Unauthorized(String),
    /// Authenticated, but the workspace or scope is not granted.
    #[error("Forbidden: {0}")]
    Forbidden(String),
    /// A referenced record does not exist in reach of the caller.
    #[error("Not found: {0}")]
    NotFound(String),
    /// A duplicate key or a reused idempotency key.
    #[error("Conflict: {message}")]
    Conflict {
        /// What conflicted, for people.
        message: String,
        /// A stable reason for programs, e.g. `idempotency_key_reused`.
        reason: Option<&'static str>,
        /// Whether the same call may succeed later.
        retryable: bool,
        /// With `version_mismatch`: the version stored now.
        current_version: Option<i32>,
    },
    /// The database is unreachable or the pool is exhausted; the cause is only logged.
    #[error("Service unavailable")]
    Unavailable {
        /// Also in the log line that holds the cause.
        request_id: Uuid,
    },
    /// Anything else; the cause is only logged.
    #[error("Internal server error")]
    Internal {
        /// Also in the log line that holds the cause.
        request_id: Uuid,
    },
}

/// The tRPC name and HTTP status of a JSON-RPC error code, per CONTRACT.md §4.
pub fn trpc_name(code: i32) -> (&'static str, u16) {
    match code {
        PARSE_ERROR => ("PARSE_ERROR", 400),
        INVALID_REQUEST | INVALID_PARAMS => ("BAD_REQUEST", 400),
        PAYLOAD_TOO_LARGE => ("PAYLOAD_TOO_LARGE", 413),
        METHOD_NOT_FOUND | NOT_FOUND => ("NOT_FOUND", 404),
        UNAUTHORIZED => ("UNAUTHORIZED", 401),
        FORBIDDEN => ("FORBIDDEN", 403),
        CONFLICT => ("CONFLICT", 409),
        _ => ("INTERNAL_SERVER_ERROR", 500),
    }
}

fn data(code: i32) -> serde_json::Map<String, Value> {
    let (name, status) = trpc_name(code);
    let mut map = serde_json::Map::new();
    map.insert("code".into(), name.into());
    map.insert("httpStatus".into(), status.into());
    map
}

impl ApiError {
    /// The caller's error for a database failure of the call `request_id`, with the cause
    /// logged under that id (the caller sees the id, never the cause): SERVICE_UNAVAILABLE
    /// (retryable) when the database did not answer, CONFLICT for a unique violation, and
    /// INTERNAL_SERVER_ERROR for anything else.
    pub fn from_db(e: crate::db::DbError, request_id: Uuid) -> Self {
        use crate::db::DbError;
        use diesel::result::{DatabaseErrorKind, Error as DieselError};
        match e {
            DbError::Unavailable(cause) => {
                tracing::warn!(%request_id, cause, "database unavailable");
                ApiError::Unavailable { request_id }
            }
            DbError::Query(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info)) => {
                tracing::warn!(%request_id, cause = info.message(), "unique violation");
                ApiError::Conflict {
                    message: "a record with the same key exists".into(),
                    reason: None,
                    retryable: false,
                    current_version: None,
                }
            }
            DbError::Query(cause) => {
                tracing::error!(%request_id, cause = %cause, "database error");
                ApiError::Internal { request_id }
            }
        }
    }

    /// The JSON-RPC error code.
    pub fn code(&self) -> i32 {
        match self {
            ApiError::Parse => PARSE_ERROR,
            ApiError::BadRequest(_) => INVALID_REQUEST,
            ApiError::PayloadTooLarge(_) => PAYLOAD_TOO_LARGE,
            ApiError::MethodNotFound => METHOD_NOT_FOUND,
            ApiError::InvalidParams(_) => INVALID_PARAMS,
            ApiError::Unauthorized(_) => UNAUTHORIZED,
            ApiError::Forbidden(_) => FORBIDDEN,
            ApiError::NotFound(_) => NOT_FOUND,
            ApiError::Conflict { .. } => CONFLICT,
            ApiError::Unavailable { .. } | ApiError::Internal { .. } => INTERNAL_ERROR,
        }
    }

    /// The `data.code` name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            ApiError::Unavailable { .. } => SERVICE_UNAVAILABLE.0,
            other => trpc_name(other.code()).0,
        }
    }

    /// The JSON-RPC error object of CONTRACT.md §4.
    pub fn into_error_object(self) -> ErrorObjectOwned {
        let code = self.code();
        let message = self.to_string();
        let mut data = data(code);
        match self {
            ApiError::InvalidParams(failure) => {
                data.insert("fieldErrors".into(), json!(failure.field_errors));
                data.insert("formErrors".into(), json!(failure.form_errors));
            }
            ApiError::Conflict { reason, retryable, current_version, .. } => {
                if let Some(reason) = reason {
                    data.insert("reason".into(), reason.into());
                }
                if let Some(version) = current_version {
                    data.insert("currentVersion".into(), version.into());
                }
                data.insert("retryable".into(), retryable.into());
            }
            ApiError::Unavailable { request_id } => {
                data.insert("code".into(), SERVICE_UNAVAILABLE.0.into());
                data.insert("httpStatus".into(), SERVICE_UNAVAILABLE.1.into());
                data.insert("retryable".into(), true.into());
                data.insert("requestId".into(), request_id.to_string().into());
            }
            ApiError::Internal { request_id } => {
                data.insert("requestId".into(), request_id.to_string().into());
            }
            _ => {}
        }
        ErrorObjectOwned::owned(code, message, Some(Value::Object(data)))
    }
}

/// SERVICE_UNAVAILABLE for a refusal at the edge (too many sockets, too many answers waiting to
/// be written): retryable, with a `reason` and without a request id, since nothing failed that
/// a log line would need to explain (and a flood of refusals must not become a flood of lines).
pub fn busy(reason: &'static str) -> ErrorObjectOwned {
    let mut data = data(INTERNAL_ERROR);
    data.insert("code".into(), SERVICE_UNAVAILABLE.0.into());
    data.insert("httpStatus".into(), SERVICE_UNAVAILABLE.1.into());
    data.insert("retryable".into(), true.into());
    data.insert("reason".into(), reason.into());
    ErrorObjectOwned::owned(INTERNAL_ERROR, "Service unavailable", Some(Value::Object(data)))
}

impl From<ApiError> for ErrorObjectOwned {
    fn from(err: ApiError) -> Self {
        err.into_error_object()
    }
}

/// Rewrites an error object that jsonrpsee produced itself (one without `data.code`) into the
/// shape of §4. Objects that already carry `data.code` are left alone. Returns whether anything
/// changed. An internal failure gets a new request id; inside a call, use
/// [`normalize_call_error`], which gives it the call's own.
pub fn normalize_error_value(error: &mut Value) -> bool {
    normalize_call_error(error, None)
}

/// [`normalize_error_value`] for an error of the call whose request id is `request_id`: an
/// internal failure carries that id as `data.requestId`, the one its call's log line shows.
pub fn normalize_call_error(error: &mut Value, request_id: Option<Uuid>) -> bool {
    let Some(obj) = error.as_object_mut() else {
        return false;
    };
    if obj.get("data").and_then(|d| d.get("code")).is_some() {
        return false;
    }
    let code = obj.get("code").and_then(Value::as_i64).unwrap_or(0) as i32;
    let (code, message) = match code {
        PARSE_ERROR => (PARSE_ERROR, "Parse error"),
        INVALID_REQUEST => (INVALID_REQUEST, "Invalid request"),
        METHOD_NOT_FOUND => (METHOD_NOT_FOUND, "Method not found"),
        INVALID_PARAMS => (INVALID_PARAMS, "Invalid params"),
        // jsonrpsee: oversized request (-32007), batch over the limit (-32010).
        -32007 | -32010 => (PAYLOAD_TOO_LARGE, "Payload too large"),
        // jsonrpsee: more subscriptions on the connection than allowed.
        -32006 => {
            let mut data = data(CONFLICT);
            data.insert("reason".into(), "too_many_subscriptions".into());
            data.insert("retryable".into(), false.into());
            obj.insert("code".into(), CONFLICT.into());
            obj.insert(
                "message".into(),
                "Conflict: at most 16 subscriptions per connection; unsubscribe one first".into(),
            );
            obj.insert("data".into(), Value::Object(data));
            return true;
        }
        _ => (INTERNAL_ERROR, "Internal server error"),
    };
    let mut data = data(code);
    if let Some(detail) = obj.get("message").and_then(Value::as_str) {
        if code == INVALID_PARAMS {
            data.insert("fieldErrors".into(), json!({}));
            data.insert("formErrors".into(), json!([detail]));
        } else if code != INTERNAL_ERROR {
            data.insert("detail".into(), detail.into());
        } else {
            // Internal failures carry a request id that is also in the log (CONTRACT.md §4).
            let request_id = request_id.unwrap_or_else(Uuid::now_v7);
            tracing::error!(%request_id, detail, "internal error from the JSON-RPC server");
            data.insert("requestId".into(), request_id.to_string().into());
        }
    }
    obj.insert("code".into(), code.into());
    obj.insert("message".into(), message.into());
    obj.insert("data".into(), Value::Object(data));
    true
}

/// Applies [`normalize_error_value`] to every error of a JSON-RPC response or batch response.
pub fn normalize_response_value(response: &mut Value) -> bool {
    match response {
        Value::Array(items) => items.iter_mut().fold(false, |changed, item| normalize_response_value(item) | changed),
        Value::Object(obj) => obj.get_mut("error").is_some_and(normalize_error_value),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(err: ApiError) -> Value {
        serde_json::to_value(err.into_error_object()).unwrap()
    }

    #[test]
    fn database_failures_map_to_the_callers_errors_without_their_cause() {
        use crate::db::DbError;
        use diesel::result::{DatabaseErrorKind, Error as DieselError};
        let id = Uuid::now_v7();
        let unavailable = object(ApiError::from_db(DbError::Unavailable("connection refused by 10.0.0.7".into()), id));
        assert_eq!(unavailable["data"]["code"], SERVICE_UNAVAILABLE.0);
        assert_eq!(unavailable["data"]["retryable"], true);
        assert_eq!(unavailable["data"]["requestId"], id.to_string());
        assert!(!unavailable.to_string().contains("10.0.0.7"), "{unavailable}");

        let unique = DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, Box::new("dup key".to_string()));
        let conflict = object(ApiError::from_db(DbError::Query(unique), id));
        assert_eq!(conflict["data"]["code"], "CONFLICT");
        assert_eq!(conflict["data"]["retryable"], false);

        let check = DieselError::DatabaseError(DatabaseErrorKind::CheckViolation, Box::new("title_check".to_string()));
        let internal = object(ApiError::from_db(DbError::Query(check), id));
        assert_eq!(internal["data"]["code"], "INTERNAL_SERVER_ERROR");
        assert_eq!(internal["data"]["requestId"], id.to_string());
        assert!(!internal.to_string().contains("title_check"), "{internal}");
    }

    /// The whole table of CONTRACT.md §4, row by row.
    #[test]
    fn contract_error_table() {
        let id = Uuid::nil();
        let rows: Vec<(ApiError, i64, &str, u64)> = vec![
            (ApiError::Parse, -32700, "PARSE_ERROR", 400),
            (ApiError::BadRequest("empty batch".into()), -32600, "BAD_REQUEST", 400),
            (ApiError::PayloadTooLarge("x".into()), -32013, "PAYLOAD_TOO_LARGE", 413),
            (ApiError::MethodNotFound, -32601, "NOT_FOUND", 404),
            (ApiError::InvalidParams(ValidationFailure::default()), -32602, "BAD_REQUEST", 400),
            (ApiError::Unauthorized("x".into()), -32001, "UNAUTHORIZED", 401),
            (ApiError::Forbidden("x".into()), -32003, "FORBIDDEN", 403),
            (ApiError::NotFound("x".into()), -32004, "NOT_FOUND", 404),
            (
                ApiError::Conflict { message: "x".into(), reason: None, retryable: false, current_version: None },
                -32009,
                "CONFLICT",
                409,
            ),
            (ApiError::Unavailable { request_id: id }, -32603, SERVICE_UNAVAILABLE.0, 503),
            (ApiError::Internal { request_id: id }, -32603, "INTERNAL_SERVER_ERROR", 500),
        ];
        for (err, code, name, status) in rows {
            let v = object(err);
            assert_eq!(v["code"], code, "{v}");
            assert_eq!(v["data"]["code"], name, "{v}");
            assert_eq!(v["data"]["httpStatus"], status, "{v}");
        }
    }

    #[test]
    fn unavailable_is_retryable_and_internal_carries_request_id() {
        let id = Uuid::now_v7();
        let v = object(ApiError::Unavailable { request_id: id });
        assert_eq!(v["data"]["retryable"], true);
        assert_eq!(v["data"]["requestId"], id.to_string());
        let v = object(ApiError::Internal { request_id: id });
        assert_eq!(v["data"]["requestId"], id.to_string());
        assert_eq!(v["message"], "Internal server error");
    }

    #[test]
    fn validation_failure_is_flattened() {
        let mut f = ValidationFailure::default();
        f.field("title", "must not be empty");
        f.form("unknown field \"pipeline_type\"");
        let v = object(ApiError::InvalidParams(f));
        assert_eq!(v["message"], "Invalid params");
        assert_eq!(v["data"]["fieldErrors"]["title"][0], "must not be empty");
        assert_eq!(v["data"]["formErrors"][0], "unknown field \"pipeline_type\"");
    }

    #[test]
    fn jsonrpsee_codes_are_normalized() {
        for (input, code, name) in [
            (-32700, -32700, "PARSE_ERROR"),
            (-32600, -32600, "BAD_REQUEST"),
            (-32601, -32601, "NOT_FOUND"),
            (-32007, -32013, "PAYLOAD_TOO_LARGE"),
            (-32010, -32013, "PAYLOAD_TOO_LARGE"),
            (-32000, -32603, "INTERNAL_SERVER_ERROR"),
        ] {
            let mut v = json!({"jsonrpc": "2.0", "id": null, "error": {"code": input, "message": "m"}});
            assert!(normalize_response_value(&mut v));
            assert_eq!(v["error"]["code"], code);
            assert_eq!(v["error"]["data"]["code"], name);
            assert_eq!(v["error"]["data"].get("requestId").is_some(), code == -32603, "{v}");
        }
    }

    #[test]
    fn normalized_errors_are_left_alone() {
        let mut v = json!([{"jsonrpc": "2.0", "id": 1, "error": object(ApiError::Forbidden("x".into()))}]);
        let before = v.clone();
        assert!(!normalize_response_value(&mut v));
        assert_eq!(v, before);
    }
}

//! [`ClientError`]: what a call of the client can fail with.

use std::collections::BTreeMap;

use jsonrpsee::types::ErrorObjectOwned;
use serde::Deserialize;
use serde_json::Value;

/// An error the service answered: a JSON-RPC error object with the service's `data` members
/// (`docs/api.md`, "Errors"). Programs switch on [`code`](Self::code), then
/// [`data_code`](Self::data_code) and [`reason`](Self::reason); `message` is for people.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// `error.code`: -32602 (invalid params), -32001, -32003, -32004, -32009, -32603, …
    pub code: i32,
    /// `error.message`, for people; may change.
    pub message: String,
    /// `data.code`: `BAD_REQUEST`, `UNAUTHORIZED`, `FORBIDDEN`, `NOT_FOUND`, `CONFLICT`,
    /// `SERVICE_UNAVAILABLE`, `INTERNAL_SERVER_ERROR`, …
    pub data_code: Option<String>,
    /// `data.httpStatus`.
    pub http_status: Option<u16>,
    /// `data.fieldErrors`: camelCase field name → messages (empty unless -32602).
    pub field_errors: BTreeMap<String, Vec<String>>,
    /// `data.formErrors`: problems of no single field (empty unless -32602).
    pub form_errors: Vec<String>,
    /// `data.reason`: `version_mismatch`, `idempotency_key_reused`, `archived`, `events_expired`,
    /// `slow_consumer`, `too_many_subscriptions`.
    pub reason: Option<String>,
    /// `data.retryable`: whether the same call may succeed later (`false` when absent).
    pub retryable: bool,
    /// `data.currentVersion`, with `version_mismatch`.
    pub current_version: Option<i32>,
    /// `data.resumeFrom`, on the last notification of a subscription the service ended.
    pub resume_from: Option<String>,
    /// `data.requestId`, with -32603: the id of the service's log line.
    pub request_id: Option<String>,
    /// `data.detail`, on errors of the JSON-RPC layer itself.
    pub detail: Option<String>,
    /// The whole `data` member as sent.
    pub data: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Data {
    code: Option<String>,
    http_status: Option<u16>,
    #[serde(default)]
    field_errors: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    form_errors: Vec<String>,
    reason: Option<String>,
    #[serde(default)]
    retryable: bool,
    current_version: Option<i32>,
    resume_from: Option<String>,
    request_id: Option<String>,
    detail: Option<String>,
}

impl RpcError {
    /// Reads an error object as jsonrpsee hands it over.
    pub fn from_error_object(error: &ErrorObjectOwned) -> Self {
        let data: Option<Value> = error.data().and_then(|raw| serde_json::from_str(raw.get()).ok());
        let fields: Data = data.as_ref().and_then(|d| Data::deserialize(d).ok()).unwrap_or_default();
        Self {
            code: error.code(),
            message: error.message().to_string(),
            data_code: fields.code,
            http_status: fields.http_status,
            field_errors: fields.field_errors,
            form_errors: fields.form_errors,
            reason: fields.reason,
            retryable: fields.retryable,
            current_version: fields.current_version,
            resume_from: fields.resume_from,
            request_id: fields.request_id,
            detail: fields.detail,
            data,
        }
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}", self.message, self.code)?;
        if let Some(name) = &self.data_code {
            write!(f, " {name}")?;
        }
        if let Some(reason) = &self.reason {
            write!(f, ", {reason}")?;
        }
        f.write_str(")")
    }
}

/// Every failure of a client call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service answered a JSON-RPC error.
    #[error("the service answered an error: {0}")]
    Rpc(Box<RpcError>),
    /// The request did not get an answer: connection refused or lost, timeout, closed client.
    #[error("transport: {0}")]
    Transport(String),
    /// The answer did not have the expected shape.
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// A subscription could not be resumed within the reconnect policy.
    #[error("the subscription ended and could not be resumed after {attempts} attempts: {last}")]
    SubscriptionLost {
        /// How many attempts were made.
        attempts: u32,
        /// The last problem seen.
        last: String,
    },
    /// A URL, header or parameter the client could not use.
    #[error("invalid input: {0}")]
    Invalid(String),
}

impl ClientError {
    /// The service's error, when it answered one.
    pub fn rpc(&self) -> Option<&RpcError> {
        match self {
            ClientError::Rpc(e) => Some(e),
            _ => None,
        }
    }

    /// `error.code`, when the service answered an error.
    pub fn code(&self) -> Option<i32> {
        self.rpc().map(|e| e.code)
    }

    /// `data.code`, when the service answered an error.
    pub fn data_code(&self) -> Option<&str> {
        self.rpc().and_then(|e| e.data_code.as_deref())
    }

    /// `data.reason`, when the service answered one.
    pub fn reason(&self) -> Option<&str> {
        self.rpc().and_then(|e| e.reason.as_deref())
    }

    /// `data.retryable` of a service error; `false` for every other error.
    pub fn retryable(&self) -> bool {
        self.rpc().is_some_and(|e| e.retryable)
    }

    /// `data.currentVersion`, with `version_mismatch`.
    pub fn current_version(&self) -> Option<i32> {
        self.rpc().and_then(|e| e.current_version)
    }

    /// `data.fieldErrors` (empty unless the params were refused).
    pub fn field_errors(&self) -> Option<&BTreeMap<String, Vec<String>>> {
        self.rpc().map(|e| &e.field_errors)
    }

    /// `data.formErrors` (empty unless the params were refused).
    pub fn form_errors(&self) -> Option<&[String]> {
        self.rpc().map(|e| e.form_errors.as_slice())
    }

    /// `data.requestId`, with -32603.
    pub fn request_id(&self) -> Option<&str> {
        self.rpc().and_then(|e| e.request_id.as_deref())
    }

    /// Whether the call did not reach an answer (the request may or may not have been done).
    pub fn is_transport(&self) -> bool {
        matches!(self, ClientError::Transport(_))
    }
}

impl From<jsonrpsee::core::client::Error> for ClientError {
    fn from(error: jsonrpsee::core::client::Error) -> Self {
        use jsonrpsee::core::client::Error as E;
        match error {
            E::Call(object) => ClientError::Rpc(Box::new(RpcError::from_error_object(&object))),
            E::ParseError(e) => ClientError::Decode(e.to_string()),
            E::InvalidSubscriptionId | E::InvalidRequestId(_) => ClientError::Decode(error.to_string()),
            E::Custom(_) | E::HttpNotImplemented | E::EmptyBatchRequest(_) | E::RegisterMethod(_) => {
                ClientError::Invalid(error.to_string())
            }
            other => ClientError::Transport(other.to_string()),
        }
    }
}

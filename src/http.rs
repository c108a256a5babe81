//! The HTTP tier in front of jsonrpsee: `/health`, `/ready` and `/metrics` answered directly (before the
//! connection limit), the call context read from the headers, and jsonrpsee's own error bodies
//! rewritten into the shape of CONTRACT.md §4.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Bytes;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, StatusCode};
use jsonrpsee::server::{HttpBody, HttpRequest, HttpResponse};
use tower::{Layer, Service};

use crate::auth::{Authenticator, Principal};
use crate::compat::{IdSwap, Swapped, has_raw_error, swap_unsupported_ids};
use crate::config::AllowedOrigins;
use crate::db::Database;
use crate::error::{ApiError, normalize_response_value};
use crate::serve::SocketInfo;

/// What the headers of an HTTP request (or a WebSocket handshake) say about its calls. It
/// travels to each call in the request's extensions.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The authenticated caller, or why not.
    pub principal: Result<Principal, String>,
    /// `X-Workspace-Id`, raw.
    pub workspace_header: Option<String>,
    /// `Idempotency-Key`, raw.
    pub idempotency_key: Option<String>,
    /// Whether the calls come over a WebSocket (subscriptions need one).
    pub websocket: bool,
    /// The id of the HTTP request (or WebSocket handshake), as answered in `X-Request-Id`.
    pub trace: String,
    /// The headers that were sent more than once, as (params field they stand for, header
    /// name): `("workspaceId", "X-Workspace-Id")`; their value above is `None`.
    pub repeated: Vec<(&'static str, &'static str)>,
    /// Whether the HTTP body is a batch (set once the body is read).
    pub in_batch: bool,
    /// On a WebSocket, its subscriptions being accepted, shared by its calls (see
    /// [`crate::compat::AcceptsInProgress`]); `None` over HTTP, which has no subscriptions.
    pub accepting: Option<crate::compat::AcceptsInProgress>,
    /// On a WebSocket, the places of its live subscriptions, shared by its calls: the limit of
    /// CONTRACT.md §9 is checked after the params and the workspace, as §4 orders the checks
    /// (`rpc::changes`); `None` over HTTP.
    pub subscriptions: Option<std::sync::Arc<tokio::sync::Semaphore>>,
}

impl CallContext {
    /// The context of a request: the token from `Authorization`, else (for a WebSocket
    /// handshake, CONTRACT.md §3) from `fallback_token`, the `access_token` query parameter.
    fn from_headers(headers: &hyper::HeaderMap, auth: &Authenticator, fallback_token: Option<&str>) -> Self {
        // A header sent twice has no one value: the first does not silently win.
        let once = |name: &str| {
            let mut values = headers.get_all(name).iter();
            let first = values.next();
            if values.next().is_some() { Err(()) } else { Ok(first) }
        };
        let text = |v: &HeaderValue| {
            v.to_str().map(str::to_string).unwrap_or_else(|_| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let principal = match once(hyper::header::AUTHORIZATION.as_str()).map(|v| v.map(HeaderValue::to_str)) {
            Err(()) => Err("the Authorization header must be sent once".to_string()),
            Ok(Some(Err(_))) => Err("the Authorization header is not valid text".to_string()),
            Ok(Some(Ok(value))) => auth.authenticate(Some(value)).map_err(unauthorized_reason),
            Ok(None) => match fallback_token {
                Some(token) => auth.authenticate(Some(&format!("Bearer {token}"))).map_err(unauthorized_reason),
                None => auth.authenticate(None).map_err(unauthorized_reason),
            },
        };
        let mut repeated = Vec::new();
        let mut field = |field: &'static str, name: &'static str| match once(name) {
            Ok(value) => value.map(text),
            Err(()) => {
                repeated.push((field, name));
                None
            }
        };
        let workspace_header = field("workspaceId", "X-Workspace-Id");
        let idempotency_key = field("idempotencyKey", "Idempotency-Key");
        Self {
            principal,
            workspace_header,
            idempotency_key,
            repeated,
            in_batch: false,
            websocket: false,
            trace: String::new(),
            accepting: None,
            subscriptions: None,
        }
    }

    /// The caller, refusing an absent, invalid or (on a long WebSocket) since expired token.
    pub fn principal(&self) -> Result<&Principal, ApiError> {
        match &self.principal {
            Ok(p) if p.is_expired() => Err(ApiError::Unauthorized("the token has expired".into())),
            Ok(p) => Ok(p),
            Err(reason) => Err(ApiError::Unauthorized(reason.clone())),
        }
    }
}

fn unauthorized_reason(e: ApiError) -> String {
    match e {
        ApiError::Unauthorized(reason) => reason,
        other => other.to_string(),
    }
}

/// Shared state of the HTTP tier.
#[derive(Debug)]
pub struct EdgeState {
    pub auth: Authenticator,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub db: Database,
    pub ready_timeout: Duration,
    /// Larger bodies (and WebSocket messages) are refused with 413 (PAYLOAD_TOO_LARGE).
    pub max_request_bytes: u32,
    /// The largest answer jsonrpsee makes.
    pub max_response_bytes: u32,
    /// A body must arrive within this time (`REQUEST_TIMEOUT`); a WebSocket with nothing to do
    /// for this time is closed.
    pub body_timeout: Duration,
    /// How often WebSocket peers are pinged.
    pub ws_ping_interval: Duration,
    /// Browser origins that may open a WebSocket (`CORS_ALLOWED_ORIGINS`).
    pub allowed_origins: AllowedOrigins,
}

/// CORS for browsers on other origins (`CORS_ALLOWED_ORIGINS`), or none when no origin is
/// allowed: then an `OPTIONS` request is answered 405 like any other method but POST. Tokens
/// travel in `Authorization`, never in cookies, so credentials are not allowed.
pub fn cors_layer(origins: &AllowedOrigins) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allow_origin = match origins {
        AllowedOrigins::Any => AllowOrigin::any(),
        AllowedOrigins::List(list) if list.is_empty() => return None,
        AllowedOrigins::List(list) => AllowOrigin::list(list.iter().filter_map(|o| HeaderValue::from_str(o).ok())),
    };
    let header = |name: &'static str| hyper::header::HeaderName::from_static(name);
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                hyper::header::AUTHORIZATION,
                CONTENT_TYPE,
                header("x-workspace-id"),
                header("idempotency-key"),
                header(X_REQUEST_ID),
                header("traceparent"),
            ])
            .expose_headers([header(X_REQUEST_ID)])
            .max_age(Duration::from_secs(3600)),
    )
}

/// The tower layer of the HTTP tier.
#[derive(Debug, Clone)]
pub struct EdgeLayer {
    state: Arc<EdgeState>,
}

impl EdgeLayer {
    /// A layer over the given state.
    pub fn new(state: Arc<EdgeState>) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Edge { inner, state: self.state.clone() }
    }
}

/// The service of [`EdgeLayer`].
#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
    state: Arc<EdgeState>,
}

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The `access_token` query parameter (RFC 6750 §2.3), decoded as a form (`%XX`, `+`).
fn access_token(uri: &hyper::Uri) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find_map(|(name, value)| (name == "access_token").then(|| value.into_owned()))
}

/// HTTP `status` with a retryable SERVICE_UNAVAILABLE error, and the connection closed after it.
pub(crate) fn busy_response(status: StatusCode, reason: &'static str) -> HttpResponse {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": crate::error::busy(reason)});
    let mut response = json_response(status, body.to_string());
    response.headers_mut().insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
    response.headers_mut().insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn json_response(status: StatusCode, body: String) -> HttpResponse {
    let mut response = HttpResponse::new(HttpBody::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    response
}

fn not_allowed(allow: &'static str) -> HttpResponse {
    let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response.headers_mut().insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
    response
}

fn plain(status: StatusCode, body: &'static str) -> HttpResponse {
    let mut response = HttpResponse::new(HttpBody::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

impl<S> Service<HttpRequest> for Edge<S>
where
    S: Service<HttpRequest, Response = HttpResponse, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        // Every answer carries the request's id: the caller's `X-Request-Id`, else the trace id
        // of its W3C `traceparent`, else a new one. Calls log it (`trace`).
        let trace = trace_id(request.headers());
        let answer = self.route(request, trace.clone());
        Box::pin(async move {
            let mut response = answer.await?;
            if let Ok(value) = HeaderValue::from_str(&trace) {
                response.headers_mut().insert(X_REQUEST_ID, value);
            }
            Ok(response)
        })
    }
}

/// The header that carries the id of a request, both ways.
const X_REQUEST_ID: &str = "x-request-id";

/// The id of a request: a caller's `X-Request-Id` of 1 to 128 characters that are safe in a log
/// line (letters, digits, `-_.:/+=@`), else the trace id of a valid W3C `traceparent`, else a
/// new UUID v7.
pub fn trace_id(headers: &hyper::HeaderMap) -> String {
    let given = headers.get(X_REQUEST_ID).and_then(|v| v.to_str().ok()).filter(|v| {
        (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(&b))
    });
    if let Some(given) = given {
        return given.to_string();
    }
    let traced = headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(|v| {
        let parts: Vec<&str> = v.trim().split('-').collect();
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let valid = parts.len() >= 4
            && hex(parts[0], 2)
            && parts[0] != "ff"
            && hex(parts[1], 32)
            && parts[1] != "0".repeat(32)
            && hex(parts[2], 16)
            && parts[2] != "0".repeat(16)
            && hex(parts[3], 2);
        valid.then(|| parts[1].to_string())
    });
    traced.unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

impl<S> Edge<S>
where
    S: Service<HttpRequest, Response = HttpResponse, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    fn route(
        &mut self,
        mut request: HttpRequest,
        trace: String,
    ) -> Pin<Box<dyn Future<Output = Result<HttpResponse, BoxError>> + Send>> {
        let is_websocket = jsonrpsee::server::ws::is_upgrade_request(&request);
        match (request.uri().path(), request.method()) {
            ("/health", &Method::GET) => return Box::pin(async { Ok(plain(StatusCode::OK, "ok\n")) }),
            ("/metrics", &Method::GET) => {
                let mut response = HttpResponse::new(HttpBody::from(self.state.metrics.render(&self.state.db)));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
                return Box::pin(async { Ok(response) });
            }
            ("/ready", &Method::GET) => {
                let state = self.state.clone();
                return Box::pin(async move {
                    let ready = tokio::time::timeout(state.ready_timeout, state.db.ping()).await;
                    Ok(match ready {
                        Ok(Ok(())) => plain(StatusCode::OK, "ready\n"),
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "not ready: the database does not answer");
                            plain(StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n")
                        }
                        Err(_) => {
                            tracing::warn!("not ready: the database did not answer in time");
                            plain(StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n")
                        }
                    })
                });
            }
            ("/health" | "/ready" | "/metrics", _) => return Box::pin(async { Ok(not_allowed("GET")) }),
            ("/", &Method::POST) => {}
            ("/", _) if is_websocket => {}
            ("/", _) => return Box::pin(async { Ok(not_allowed("POST")) }),
            _ => return Box::pin(async { Ok(plain(StatusCode::NOT_FOUND, "not found\n")) }),
        }
        let socket = request.extensions().get::<SocketInfo>().cloned();
        if socket.as_ref().is_some_and(|s| s.probe_only) {
            // A socket beyond MAX_CONNECTIONS: the probes are answered on it, calls are not.
            return Box::pin(async { Ok(busy_response(StatusCode::TOO_MANY_REQUESTS, "too_many_connections")) });
        }
        // Take the service that was polled ready, leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        if is_websocket {
            // CONTRACT.md §2/§3: a handshake without a valid token is refused with 401; the token
            // travels in Authorization or, for browsers, in `access_token` (never logged: the
            // URI goes no further than this).
            let token = if request.headers().contains_key(hyper::header::AUTHORIZATION) {
                None
            } else {
                access_token(request.uri())
            };
            let mut context = CallContext::from_headers(request.headers(), &state.auth, token.as_deref());
            // A handshake header would apply one key to every call of the connection; on a
            // WebSocket the key goes in each call's params (CONTRACT.md §6).
            context.idempotency_key = None;
            context.repeated.retain(|(field, _)| *field != "idempotencyKey");
            context.websocket = true;
            context.accepting = Some(Default::default());
            context.subscriptions = Some(std::sync::Arc::new(tokio::sync::Semaphore::new(
                crate::rpc::changes::MAX_SUBSCRIPTIONS_PER_CONNECTION as usize,
            )));
            context.trace = trace;
            // A browser says where the page came from; only allowed origins may open a socket
            // (after the token: a handshake without a valid one is a 401 whatever its origin).
            let refused = match (context.principal(), request.headers().get(hyper::header::ORIGIN)) {
                (Err(error), _) => Some((StatusCode::UNAUTHORIZED, error)),
                (Ok(_), Some(origin)) if !state.allowed_origins.allows(origin.as_bytes()) => Some((
                    StatusCode::FORBIDDEN,
                    ApiError::Forbidden(
                        "this Origin may not open a WebSocket: add it to CORS_ALLOWED_ORIGINS".to_string(),
                    ),
                )),
                _ => None,
            };
            if let Some((status, error)) = refused {
                let mut response = error_response(status, error);
                // Nothing more is served on a refused handshake's socket.
                response.headers_mut().insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
                return Box::pin(async move { Ok(response) });
            }
            let Some(socket) = socket else {
                return Box::pin(async { Ok(busy_response(StatusCode::SERVICE_UNAVAILABLE, "unavailable")) });
            };
            let config = crate::ws::RelayConfig {
                max_request_bytes: state.max_request_bytes,
                max_response_bytes: state.max_response_bytes,
                ping_interval: state.ws_ping_interval,
                idle_timeout: state.body_timeout,
            };
            return Box::pin(crate::ws::accept(request, context, inner, config, socket.ledger));
        }
        let mut context = CallContext::from_headers(request.headers(), &state.auth, None);
        context.trace = trace;
        request.extensions_mut().insert(context);
        Box::pin(async move {
            if let Some(socket) = &socket
                && socket.ledger.budget().is_spent()
            {
                // Answers to other callers wait to be written; a new call would add to them.
                return Ok(busy_response(StatusCode::SERVICE_UNAVAILABLE, "responses_pending"));
            }
            let too_large = || {
                let message = format!("the request body exceeds MAX_REQUEST_BYTES ({} bytes)", state.max_request_bytes);
                let mut response = error_response(StatusCode::PAYLOAD_TOO_LARGE, ApiError::PayloadTooLarge(message));
                // The body is left unread (no `100 Continue` either), so the connection ends here.
                response.headers_mut().insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
                response
            };
            // A declared length over the limit is refused before any of the body is read.
            let declared =
                request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
            if declared.is_some_and(|n| n > u64::from(state.max_request_bytes)) {
                return Ok(too_large());
            }
            // Read the body here, within the size limit and in bounded time, so that a body that
            // is JSON but not JSON-RPC can be told from one that is not JSON at all.
            let (mut parts, body) = request.into_parts();
            let limited = http_body_util::Limited::new(body, state.max_request_bytes as usize);
            let bytes = match tokio::time::timeout(state.body_timeout, limited.collect()).await {
                Ok(Ok(collected)) => collected.to_bytes(),
                Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Ok(too_large()),
                Ok(Err(e)) => {
                    // Broken framing (a chunk size that is no number, say), or a client gone
                    // mid-body: answered, in case someone still reads, and the connection ends.
                    tracing::debug!(error = %e, "the request body could not be read");
                    let message = "the request body could not be read: its framing (chunked encoding or \
                                   Content-Length) is broken"
                        .to_string();
                    let mut response = error_response(StatusCode::BAD_REQUEST, ApiError::BadRequest(message));
                    response.headers_mut().insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
                    return Ok(response);
                }
                Err(_) => {
                    let message = format!("the request body did not arrive within {:?}", state.body_timeout);
                    return Ok(error_response(StatusCode::REQUEST_TIMEOUT, ApiError::BadRequest(message)));
                }
            };
            // The calls of a batch learn that they are in one (an Idempotency-Key header cannot
            // be the key of several calls, CONTRACT.md §6).
            if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
                && let Some(context) = parts.extensions.get_mut::<CallContext>()
            {
                context.in_batch = true;
            }
            let response = answer(&mut inner, parts, bytes).await?;
            let (mut parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            // A notification, or a batch of notifications only: no answer at all.
            if parts.status == StatusCode::OK && matches!(body.trim_ascii(), b"" | b"null") {
                parts.status = StatusCode::NO_CONTENT;
                parts.headers.remove(CONTENT_TYPE);
                parts.headers.remove(CONTENT_LENGTH);
                return Ok(HttpResponse::from_parts(parts, HttpBody::empty()));
            }
            if let Some(socket) = &socket {
                socket.ledger.record(body.len());
            }
            Ok(HttpResponse::from_parts(parts, HttpBody::new(http_body_util::Full::new(body))))
        })
    }
}

/// The answer to a POST whose body was read: refusals of the edge, or jsonrpsee's answer in
/// §4's shape.
async fn answer<S>(inner: &mut S, parts: hyper::http::request::Parts, bytes: Bytes) -> Result<HttpResponse, BoxError>
where
    S: Service<HttpRequest, Response = HttpResponse, Error = BoxError>,
{
    // JSON is UTF-8: anything else is not JSON at all (jsonrpsee would call bad bytes
    // inside a string an invalid request).
    if std::str::from_utf8(&bytes).is_err() {
        return Ok(error_response(StatusCode::OK, ApiError::Parse));
    }
    let (bytes, swaps) = match swap_unsupported_ids(&bytes) {
        Swapped::Invalid(why) => {
            let error = ApiError::BadRequest(why.into());
            return Ok(error_response(StatusCode::OK, error));
        }
        Swapped::Body(swapped, swaps) => (swapped, swaps),
        Swapped::Unchanged => (bytes, Vec::new()),
    };
    let request = HttpRequest::from_parts(parts, HttpBody::new(http_body_util::Full::new(bytes.clone())));
    let response = inner.call(request).await?;
    match response.status() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            let error = ApiError::BadRequest("Content-Type: application/json is required".into());
            Ok(error_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, error))
        }
        StatusCode::TOO_MANY_REQUESTS => Ok(busy_response(StatusCode::TOO_MANY_REQUESTS, "too_many_connections")),
        _ => normalize_http_response(response, &bytes, &swaps).await,
    }
}

/// A JSON-RPC error answer made here, before jsonrpsee saw the request.
pub(crate) fn error_response(status: StatusCode, error: ApiError) -> HttpResponse {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": error.into_error_object()});
    json_response(status, body.to_string())
}

/// Rewrites jsonrpsee's own error bodies (parse errors, invalid requests, oversized bodies and
/// batches) into the contract's shape. Bodies with nothing to rewrite pass untouched.
async fn normalize_http_response(
    response: HttpResponse,
    request: &[u8],
    swaps: &[IdSwap],
) -> Result<HttpResponse, BoxError> {
    let is_json = response.headers().get(CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json {
        return Ok(response);
    }
    let (mut parts, body) = response.into_parts();
    let bytes = body.collect().await?.to_bytes();
    let (parts_out, body) = rewrite_errors(parts, bytes, request).await?;
    parts = parts_out;
    if swaps.is_empty() {
        return Ok(HttpResponse::from_parts(parts, HttpBody::new(http_body_util::Full::new(body))));
    }
    let mut text = String::from_utf8_lossy(&body).into_owned();
    for swap in swaps {
        text = text.replace(&swap.placeholder, &swap.original);
    }
    parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(text.len()));
    Ok(HttpResponse::from_parts(parts, HttpBody::from(text)))
}

async fn rewrite_errors(
    mut parts: hyper::http::response::Parts,
    bytes: Bytes,
    request: &[u8],
) -> Result<(hyper::http::response::Parts, Bytes), BoxError> {
    // Only bodies with an error that has no `data` yet (one jsonrpsee made) are parsed into a
    // value; the probe skips over results (a batch of big answers) without building them.
    let needs_rewrite = memchr::memmem::find(&bytes, b"\"error\"").is_some() && has_raw_error(&bytes);
    if !needs_rewrite {
        return Ok((parts, bytes));
    }
    let mut value = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(value) => value,
        Err(_) => return Ok((parts, bytes)),
    };
    // jsonrpsee calls any single request it cannot read a parse error; JSON that is simply not
    // JSON-RPC is an invalid request (-32600) by the contract.
    if value["error"]["code"] == crate::error::PARSE_ERROR
        && serde_json::from_slice::<serde::de::IgnoredAny>(request).is_ok()
    {
        value["error"] =
            serde_json::json!({"code": crate::error::INVALID_REQUEST, "message": "not a JSON-RPC 2.0 request"});
    }
    // One rule for the status, whatever path jsonrpsee took (it answers some parse errors with
    // 400): a JSON-RPC error travels with 200; data.httpStatus says what kind it is.
    if parts.status == StatusCode::BAD_REQUEST {
        parts.status = StatusCode::OK;
    }
    if normalize_response_value(&mut value) {
        let text = serde_json::to_vec(&value)?;
        parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(text.len()));
        Ok((parts, Bytes::from(text)))
    } else {
        Ok((parts, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::access_token;

    #[test]
    fn access_token_is_read_from_the_query_and_decoded() {
        let token = |uri: &str| access_token(&uri.parse().unwrap());
        assert_eq!(token("/?access_token=a.b.c").as_deref(), Some("a.b.c"));
        assert_eq!(token("/?x=1&access_token=a%2Eb%2ec&y=2").as_deref(), Some("a.b.c"));
        assert_eq!(token("/?access_token=a+b").as_deref(), Some("a b"), "a form's + is a space");
        assert_eq!(token("/?token=a.b.c"), None);
        assert_eq!(token("/"), None);
    }
}

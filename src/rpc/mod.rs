//! The JSON-RPC tier: the methods of every namespace merged into one module, and the RPC
//! middleware that logs each call, runs notifications, enforces the batch rules and normalizes
//! errors.

pub mod caller;
pub mod changes;
pub mod discover;
pub mod lifecycle;
pub mod list;
pub mod openapi;
pub mod opportunity;
pub mod params;
pub mod wire;

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::join_all;
use jsonrpsee::RpcModule;
use jsonrpsee::core::middleware::{Batch, BatchEntry, Notification, RpcServiceT};
use jsonrpsee::server::BatchResponseBuilder;
use jsonrpsee::server::middleware::rpc::MethodResponse;
use jsonrpsee::types::{ErrorObjectOwned, Id, Request};

use tracing::Instrument as _;
use uuid::Uuid;

use crate::db::Database;
use crate::error::{ApiError, normalize_call_error};
use crate::metrics::Metrics;

/// What every method handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub db: Database,
    pub metrics: Arc<Metrics>,
    /// Signs the cursors of `opportunity.list`.
    pub cursor_key: list::CursorKey,
    /// The live change feed of this process.
    pub feed: crate::feed::Feed,
}

/// The id of one call: in its log line, its span, and `data.requestId` of an internal error.
#[derive(Debug, Clone, Copy)]
pub struct RequestId(pub Uuid);

/// Merges every namespace into one module; a duplicate method name is a start-up error.
/// `listen_addr`, the address the service listens on, is the server `rpc.discover` names.
pub fn methods(state: AppState, listen_addr: std::net::SocketAddr) -> anyhow::Result<RpcModule<()>> {
    let mut module = RpcModule::new(());
    module.merge(opportunity::module(state)?)?;
    discover::register(&mut module, listen_addr)?;
    Ok(module)
}

/// RPC middleware settings.
#[derive(Debug, Clone, Copy)]
pub struct RpcLimits {
    /// Larger batches are refused with PAYLOAD_TOO_LARGE.
    pub max_batch: usize,
    /// The response size limit, as the server has it.
    pub max_response_bytes: usize,
}

/// The layer that puts [`CallMiddleware`] around jsonrpsee's RPC service.
#[derive(Debug, Clone)]
pub struct CallLayer {
    /// The limits it enforces.
    pub limits: RpcLimits,
    /// Where calls are counted.
    pub metrics: Arc<Metrics>,
    /// The registered method names: the only ones that reach a log line or a metric label.
    pub names: MethodNames,
    /// The answer bytes produced and not yet written, over every connection.
    pub budget: Arc<crate::serve::AnswerBudget>,
}

/// The registered method names (CONTRACT.md §2: label values and log fields come from a fixed
/// set; caller text never does).
#[derive(Debug, Clone, Default)]
pub struct MethodNames(Arc<std::collections::HashSet<&'static str>>);

impl MethodNames {
    /// The names of `module`.
    pub fn of<C>(module: &RpcModule<C>) -> Self {
        Self(Arc::new(module.method_names().collect()))
    }

    /// `name` when it is registered, else `unknown`.
    pub fn label(&self, name: &str) -> &'static str {
        self.0.get(name).copied().unwrap_or("unknown")
    }
}

impl<S> tower::Layer<S> for CallLayer {
    type Service = CallMiddleware<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CallMiddleware {
            inner,
            limits: self.limits,
            metrics: self.metrics.clone(),
            names: self.names.clone(),
            budget: self.budget.clone(),
        }
    }
}

/// The RPC middleware (see the module documentation).
#[derive(Debug, Clone)]
pub struct CallMiddleware<S> {
    inner: S,
    limits: RpcLimits,
    metrics: Arc<Metrics>,
    names: MethodNames,
    budget: Arc<crate::serve::AnswerBudget>,
}

/// Answers up to this size are always delivered; a larger answer to a read is dropped for a
/// retryable SERVICE_UNAVAILABLE when it would not fit in what is left of
/// `MAX_PENDING_RESPONSE_BYTES` ([`within_budget`]).
const SMALL_ANSWER: usize = 64 * 1024;

/// The methods that only read: dropping one's answer loses nothing, and a retry reads again.
/// The answer of a change is never dropped (it committed; a retry without a key would create
/// again).
const READS: [&str; 4] = [lifecycle::GET, list::LIST, changes::CHANGES, discover::DISCOVER];

/// Rewrites an error response that jsonrpsee made itself (unknown method, an answer over
/// `MAX_RESPONSE_BYTES`, …) into §4's shape; an internal failure carries the call's
/// `request_id`.
fn normalize(id: Id<'static>, response: MethodResponse, request_id: Uuid) -> MethodResponse {
    if !response.is_error() {
        return response;
    }
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(response.as_json().get()) else {
        return response;
    };
    let Some(error) = value.get_mut("error") else {
        return response;
    };
    if !normalize_call_error(error, Some(request_id)) {
        return response;
    }
    match serde_json::from_value::<ErrorObjectOwned>(error.take()) {
        Ok(object) => MethodResponse::error(id, object).with_extensions(response.extensions().clone()),
        Err(_) => response,
    }
}

/// The `data.code` of an error response (SERVICE_UNAVAILABLE is told from other -32603s).
fn error_name(response: &MethodResponse) -> &'static str {
    let code = response.as_error_code().unwrap_or_default();
    if code == crate::error::INTERNAL_ERROR && response.as_json().get().contains("\"SERVICE_UNAVAILABLE\"") {
        "SERVICE_UNAVAILABLE"
    } else {
        crate::error::trpc_name(code).0
    }
}

impl<S> RpcServiceT for CallMiddleware<S>
where
    S: RpcServiceT<
            MethodResponse = MethodResponse,
            BatchResponse = MethodResponse,
            NotificationResponse = MethodResponse,
        > + Clone
        + Send
        + Sync
        + 'static,
{
    type MethodResponse = MethodResponse;
    type NotificationResponse = MethodResponse;
    type BatchResponse = MethodResponse;

    fn call<'a>(&self, request: Request<'a>) -> impl Future<Output = Self::MethodResponse> + Send + 'a {
        let gate = request.extensions.get::<Arc<crate::ws::Gate>>().cloned();
        let call = self.call_one(request);
        async move {
            let response = call.await;
            // Over a WebSocket: the answer now waits to be written (the relay reads less meanwhile).
            if let Some(gate) = gate {
                gate.record(response.as_json().get().len());
            }
            response
        }
    }

    fn batch<'a>(&self, mut batch: Batch<'a>) -> impl Future<Output = Self::BatchResponse> + Send + 'a {
        let gate = batch.extensions().get::<Arc<crate::ws::Gate>>().cloned();
        let this = self.clone();
        async move {
            let response = this.batch_all(batch).await;
            if let Some(gate) = gate {
                if response.is_notification() {
                    gate.settle();
                } else {
                    gate.record(response.as_json().get().len());
                }
            }
            response
        }
    }

    fn notification<'a>(&self, n: Notification<'a>) -> impl Future<Output = Self::NotificationResponse> + Send + 'a {
        let gate = n.extensions.get::<Arc<crate::ws::Gate>>().cloned();
        let run = self.notify_one(n);
        async move {
            run.await;
            // Over a WebSocket: the message is settled, nothing will answer it.
            if let Some(gate) = gate {
                gate.settle();
            }
            MethodResponse::notification()
        }
    }
}

/// `response`, or, for a read ([`READS`]), a retryable SERVICE_UNAVAILABLE (`reason:
/// responses_pending`) in its place when it is larger than [`SMALL_ANSWER`] and would not fit
/// in what is left of the answer budget: the answers of calls already read (up to 16 a
/// WebSocket, 100 a batch) would otherwise all be kept, whatever their size, until their
/// clients read them.
fn within_budget(
    budget: &crate::serve::AnswerBudget,
    method: &str,
    id: Id<'static>,
    response: MethodResponse,
) -> MethodResponse {
    if !READS.contains(&method) {
        return response;
    }
    let len = response.as_json().get().len();
    let pending = budget.pending();
    // With nothing waiting, one answer of any size (up to MAX_RESPONSE_BYTES) goes: a budget
    // set below that limit must not make an answer impossible.
    if len <= SMALL_ANSWER || pending == 0 || pending.saturating_add(len) <= budget.limit() {
        return response;
    }
    MethodResponse::error(id, crate::error::busy("responses_pending")).with_extensions(response.extensions().clone())
}

/// Whether `request` is an `opportunity.subscribe` over a WebSocket (over HTTP, `call_one`
/// refuses it, naming WebSocket).
fn subscribes_over_websocket(request: &Request<'_>) -> bool {
    request.method_name() == changes::SUBSCRIBE
        && request.extensions.get::<crate::http::CallContext>().is_some_and(|c| c.websocket)
}

impl<S> CallMiddleware<S>
where
    S: RpcServiceT<
            MethodResponse = MethodResponse,
            BatchResponse = MethodResponse,
            NotificationResponse = MethodResponse,
        > + Clone
        + Send
        + Sync
        + 'static,
{
    /// One call, logged and counted.
    fn call_one<'a>(&self, mut request: Request<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        let inner = self.inner.clone();
        let metrics = self.metrics.clone();
        let budget = self.budget.clone();
        // Only a registered name is logged or counted; anything else is `unknown`.
        let method = self.names.label(request.method_name());
        async move {
            let started = Instant::now();
            let id = request.id().into_owned();
            let request_id = Uuid::now_v7();
            if method == changes::SUBSCRIBE || method == changes::UNSUBSCRIBE {
                let context = request.extensions.get::<crate::http::CallContext>();
                if !context.is_some_and(|c| c.websocket) {
                    // §4's order first: the token, then (to subscribe) the scope; then the
                    // refusal of the transport.
                    let access = match method {
                        changes::SUBSCRIBE => caller::principal(context, caller::Access::Read).map(|_| ()),
                        _ => context.map_or(Ok(()), |c| c.principal().map(|_| ())),
                    };
                    let error = access.err().unwrap_or_else(|| {
                        ApiError::BadRequest(format!(
                            "{method} needs a WebSocket connection (the same port and path); over HTTP, poll opportunity.changes"
                        ))
                    });
                    let response = MethodResponse::error(id, error.into_error_object());
                    metrics.observe_call(method, error_name(&response), started.elapsed().as_secs_f64());
                    return response;
                }
                if method == changes::UNSUBSCRIBE {
                    match crate::compat::unsubscribe_params(request.params.take()) {
                        Ok(params) => request.params = Some(std::borrow::Cow::Owned(params)),
                        Err(failure) => {
                            let response =
                                MethodResponse::error(id, ApiError::InvalidParams(failure).into_error_object());
                            metrics.observe_call(method, "BAD_REQUEST", started.elapsed().as_secs_f64());
                            return response;
                        }
                    }
                }
            }
            request.extensions.insert(RequestId(request_id));
            // Who calls, over what, under which request id of theirs (X-Request-Id/traceparent).
            let context = request.extensions.get::<crate::http::CallContext>();
            let transport = if context.is_some_and(|c| c.websocket) { "ws" } else { "http" };
            let trace = context.map(|c| c.trace.clone()).unwrap_or_default();
            let user = context.and_then(|c| c.principal.as_ref().ok()).map(|p| p.user_id);
            // The handler records the workspace into this span once it knows it.
            let span = tracing::info_span!(
                "call",
                method,
                %request_id,
                trace,
                transport,
                user = user.map(tracing::field::display),
                workspace = tracing::field::Empty
            );
            let accepting = context.filter(|_| method == changes::UNSUBSCRIBE).and_then(|c| c.accepting.clone());
            let answer = match accepting {
                Some(accepting) => {
                    crate::compat::unsubscribed(&inner, request, &accepting).instrument(span.clone()).await
                }
                None => inner.call(request).instrument(span.clone()).await,
            };
            let response = span.in_scope(|| normalize(id.clone(), answer, request_id));
            let response = within_budget(&budget, method, id, response);
            let elapsed = started.elapsed();
            let outcome = match response.as_error_code() {
                None => "OK",
                Some(_) => error_name(&response),
            };
            metrics.observe_call(method, outcome, elapsed.as_secs_f64());
            tracing::info!(target: "rpc", parent: &span, micros = elapsed.as_micros() as u64, outcome, "call");
            response
        }
    }

    /// The calls of a batch, run concurrently and answered in order.
    fn batch_all<'a>(&self, batch: Batch<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        let this = self.clone();
        async move {
            if batch.is_empty() {
                return MethodResponse::error(Id::Null, ApiError::BadRequest("a batch must not be empty".into()));
            }
            if batch.len() > this.limits.max_batch {
                let message =
                    format!("a batch may hold at most {} calls; this one holds {}", this.limits.max_batch, batch.len());
                return MethodResponse::error(Id::Null, ApiError::PayloadTooLarge(message));
            }
            // Calls of one batch are independent: run them concurrently, answer in order. Once
            // their answers add up to more than MAX_RESPONSE_BYTES, the batch is answered with
            // one error; the answers that come after are dropped as they come, not kept.
            let answered = std::sync::atomic::AtomicUsize::new(0);
            let answered = &answered;
            let max = this.limits.max_response_bytes;
            let answers = join_all(batch.into_iter().map(|entry| {
                let this = this.clone();
                async move {
                    match entry {
                        Ok(BatchEntry::Call(request)) if subscribes_over_websocket(&request) => {
                            // jsonrpsee writes a subscription's id to the socket at once, then
                            // again in the batch's answer (and its first events may come before
                            // that answer): a subscribe is answered alone or not at all.
                            let error = ApiError::BadRequest(format!(
                                "{} cannot be part of a batch: send it as a message of its own, so that its \
                                 subscription id comes once and before its first notification",
                                changes::SUBSCRIBE
                            ));
                            this.metrics.observe_call(changes::SUBSCRIBE, "BAD_REQUEST", 0.0);
                            Some(MethodResponse::error(request.id().into_owned(), error.into_error_object()))
                        }
                        Ok(BatchEntry::Call(request)) => {
                            let answer = this.call_one(request).await;
                            let len = answer.as_json().get().len();
                            let before = answered.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
                            // Over the limit: the batch is refused whole below.
                            if before.saturating_add(len) > max { None } else { Some(answer) }
                        }
                        Ok(BatchEntry::Notification(n)) => {
                            this.notify_one(n).await;
                            None
                        }
                        Err(err) => {
                            let (object, id) = err.into_parts();
                            let id = id.into_owned();
                            Some(normalize(id.clone(), MethodResponse::error(id, object), Uuid::now_v7()))
                        }
                    }
                }
            }))
            .await;
            if answered.load(std::sync::atomic::Ordering::Relaxed) > max {
                let too_big =
                    MethodResponse::error(Id::Null, jsonrpsee::types::error::reject_too_big_batch_response(max));
                return normalize(Id::Null, too_big, Uuid::now_v7());
            }
            let mut builder = BatchResponseBuilder::new_with_limit(this.limits.max_response_bytes);
            let mut any = false;
            for answer in answers.into_iter().flatten() {
                any = true;
                if let Err(too_big) = builder.append(answer) {
                    // jsonrpsee's own -32011, in §4's shape (as a single answer over the limit).
                    return normalize(Id::Null, too_big, Uuid::now_v7());
                }
            }
            if any { MethodResponse::from_batch(builder.finish()) } else { MethodResponse::notification() }
        }
    }

    /// JSON-RPC 2.0: a notification is processed like a call; only its answer is dropped. A
    /// subscribe sent as a notification opens nothing: its id could reach no one, and jsonrpsee
    /// would write that id to the socket, an answer to a message that must get none.
    fn notify_one<'a>(&self, n: Notification<'a>) -> impl Future<Output = ()> + Send + 'a {
        let request =
            Request { jsonrpc: n.jsonrpc, id: Id::Null, method: n.method, params: n.params, extensions: n.extensions };
        let call = (request.method_name() != changes::SUBSCRIBE).then(|| self.call_one(request));
        async move {
            if let Some(call) = call {
                let _ = call.await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A large answer to a read that would not fit in what is left of the answer budget is
    /// replaced by a retryable SERVICE_UNAVAILABLE; small answers, any answer while nothing
    /// waits, and the answer of a change (which committed) go.
    #[test]
    fn large_answers_beyond_the_budget_are_refused_retryable() {
        let budget = crate::serve::AnswerBudget::new(200 * 1024);
        let answer = |bytes: usize| {
            let text = serde_json::value::to_raw_value(&"x".repeat(bytes)).unwrap();
            MethodResponse::response(Id::Number(1), jsonrpsee::ResponsePayload::success(text), usize::MAX)
        };
        let refused = |r: &MethodResponse| r.as_json().get().contains("responses_pending");
        let list = list::LIST;
        assert!(!refused(&within_budget(&budget, list, Id::Number(1), answer(300 * 1024))), "nothing waits: it goes");
        budget.add(150 * 1024);
        let big = within_budget(&budget, list, Id::Number(1), answer(100 * 1024));
        assert!(refused(&big), "{}", big.as_json());
        assert!(big.as_json().get().contains(r#""retryable":true"#), "{}", big.as_json());
        assert!(big.as_json().get().contains(r#""code":"SERVICE_UNAVAILABLE""#), "{}", big.as_json());
        assert!(!refused(&within_budget(&budget, list, Id::Number(1), answer(40 * 1024))), "a small answer goes");
        let update = "opportunity.update";
        assert!(!refused(&within_budget(&budget, update, Id::Number(1), answer(100 * 1024))), "a change's answer goes");
        budget.sub(150 * 1024);
        assert!(!refused(&within_budget(&budget, list, Id::Number(1), answer(100 * 1024))), "room again: it goes");
    }
}

//! [`Client`]: the methods over HTTP or WebSocket, with retries and resumable subscriptions.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::Stream;
use jsonrpsee::core::client::{ClientT, Subscription, SubscriptionClientT};
use jsonrpsee::core::traits::ToRpcParams;
use jsonrpsee::http_client::{HeaderMap, HeaderValue, HttpClient, HttpClientBuilder};
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::error::ClientError;
use crate::params::{ArchiveOpportunity, Changes, CreateOpportunity, GetOpportunity, ListOpportunities, Subscribe};
use crate::params::{RestoreOpportunity, UpdateOpportunity};
use crate::types::{ChangesPage, Opportunity, OpportunityEvent, OpportunityPage};

/// How a call is retried when it fails with `retryable: true` (or, optionally, in transport).
///
/// The default makes **3 attempts** in all, waiting 100 ms, then 200 ms (doubling, at most
/// `max_backoff`) between them, on service errors with `data.retryable: true`
/// (SERVICE_UNAVAILABLE) and on transport errors (no answer). Retrying is safe for writes:
/// `create`, `update`, `archive` and `restore` send one idempotency key per logical call and keep
/// it across the retries, so the service does the work once. [`RetryPolicy::none`] turns
/// retries off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 means no retry.
    pub max_attempts: u32,
    /// The wait before the second attempt; it doubles with every further attempt.
    pub initial_backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// Whether a call that got no answer (connection refused or lost, timeout) is retried too.
    pub retry_transport_errors: bool,
}

impl RetryPolicy {
    /// No retries: every call is made once.
    pub const fn none() -> Self {
        Self {
            max_attempts: 1,
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            retry_transport_errors: false,
        }
    }

    /// The wait after the failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }

    fn should_retry(&self, error: &ClientError, attempt: u32) -> bool {
        attempt < self.max_attempts && (error.retryable() || (self.retry_transport_errors && error.is_transport()))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            retry_transport_errors: true,
        }
    }
}

/// How [`Client::subscribe`] resumes a subscription that ended.
///
/// When the connection drops, or the service ends the subscription (`slow_consumer`, a database
/// that could not be read), or the client's own buffer for it overflows, the stream opens the
/// connection again if needed and resubscribes with `since` = the last `eventId` it yielded, so
/// that no event is missed or repeated. Up to `max_attempts` consecutive attempts are made,
/// waiting `initial_backoff`, doubling up to `max_backoff`; the count starts over with every
/// event received (and after a subscription that lasted `stable_after`). When they are used up
/// the stream yields [`ClientError::SubscriptionLost`] and ends. An error that retrying cannot
/// mend (bad params, UNAUTHORIZED, FORBIDDEN, `events_expired`, …) is yielded and ends the
/// stream at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Consecutive attempts to resubscribe before giving up; 0 never resubscribes.
    pub max_attempts: u32,
    /// The wait before the first attempt; it doubles with every further attempt.
    pub initial_backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// A subscription that lasted this long resets the count of attempts when it ends.
    pub stable_after: Duration,
}

impl Default for ReconnectPolicy {
    /// 5 attempts, 200 ms doubling up to 5 s, reset after 30 s of a working subscription.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            stable_after: Duration::from_secs(30),
        }
    }
}

impl ReconnectPolicy {
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// The largest answer the client reads: the service's own limit on its answers (16 MiB), above
/// jsonrpsee's default of 10 MiB (a page of 200 opportunities with long texts can exceed that).
pub const MAX_RESPONSE_BYTES: u32 = 16 * 1024 * 1024;

/// Params already serialized (so that retries send the very same text, key included).
struct RawParams(Box<RawValue>);

impl ToRpcParams for RawParams {
    fn to_rpc_params(self) -> Result<Option<Box<RawValue>>, serde_json::Error> {
        Ok(Some(self.0))
    }
}

struct WsTransport {
    url: String,
    headers: HeaderMap,
    current: tokio::sync::Mutex<Option<Arc<WsClient>>>,
}

impl WsTransport {
    /// The open connection, or a new one when there is none or it was lost.
    async fn client(&self) -> Result<Arc<WsClient>, ClientError> {
        let mut current = self.current.lock().await;
        if let Some(client) = current.as_ref().filter(|c| c.is_connected()) {
            return Ok(client.clone());
        }
        let client = Arc::new(
            WsClientBuilder::default()
                .max_response_size(MAX_RESPONSE_BYTES)
                .set_headers(self.headers.clone())
                .build(&self.url)
                .await
                .map_err(ClientError::from)?,
        );
        *current = Some(client.clone());
        Ok(client)
    }
}

enum Transport {
    Http(HttpClient),
    Ws(WsTransport),
}

/// A client of opportunity-service over HTTP ([`Client::http`]) or WebSocket ([`Client::ws`]).
///
/// Cheap to clone: clones share the connection. Every method returns the typed answer or a
/// [`ClientError`]; see [`RetryPolicy`] for retries and [`ReconnectPolicy`] for subscriptions.
#[derive(Clone)]
pub struct Client {
    transport: Arc<Transport>,
    retry: RetryPolicy,
    reconnect: ReconnectPolicy,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &*self.transport {
            Transport::Http(_) => "http",
            Transport::Ws(_) => "ws",
        };
        f.debug_struct("Client")
            .field("transport", &kind)
            .field("retry", &self.retry)
            .field("reconnect", &self.reconnect)
            .finish()
    }
}

fn headers(token: &str) -> Result<HeaderMap, ClientError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| ClientError::Invalid("the token is not a valid header value".into()))?;
    value.set_sensitive(true);
    let mut map = HeaderMap::new();
    map.insert("authorization", value);
    Ok(map)
}

impl Client {
    /// A client that POSTs every call to `url` (`http://host:port/`) with
    /// `Authorization: Bearer <token>`. Nothing is sent until the first call.
    pub fn http(url: &str, token: &str) -> Result<Self, ClientError> {
        let client = HttpClientBuilder::default()
            .max_response_size(MAX_RESPONSE_BYTES)
            .set_headers(headers(token)?)
            .build(url)
            .map_err(ClientError::from)?;
        Ok(Self::with_transport(Transport::Http(client)))
    }

    /// A client on a WebSocket to `url` (`ws://host:port/`), whose handshake carries
    /// `Authorization: Bearer <token>`. Connects now; a lost connection is opened again by the
    /// next call (and by a subscription's resume).
    pub async fn ws(url: &str, token: &str) -> Result<Self, ClientError> {
        let ws = WsTransport { url: url.to_string(), headers: headers(token)?, current: tokio::sync::Mutex::new(None) };
        ws.client().await?;
        Ok(Self::with_transport(Transport::Ws(ws)))
    }

    fn with_transport(transport: Transport) -> Self {
        Self { transport: Arc::new(transport), retry: RetryPolicy::default(), reconnect: ReconnectPolicy::default() }
    }

    /// The same client with another retry policy (for calls made through the returned client).
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The same client with another reconnect policy for [`Client::subscribe`].
    #[must_use]
    pub fn with_reconnect(mut self, reconnect: ReconnectPolicy) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// The retry policy of calls.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    async fn request_once<R: DeserializeOwned>(&self, method: &str, params: &RawValue) -> Result<R, ClientError> {
        let params = RawParams(params.to_owned());
        let result = match &*self.transport {
            Transport::Http(client) => client.request(method, params).await,
            Transport::Ws(ws) => ws.client().await?.request(method, params).await,
        };
        result.map_err(ClientError::from)
    }

    /// Calls `method` with `params`, retried by the client's policy. The params are serialized
    /// once: every attempt sends the same text.
    pub async fn call<P: Serialize, R: DeserializeOwned>(&self, method: &str, params: &P) -> Result<R, ClientError> {
        let raw = serde_json::value::to_raw_value(params).map_err(|e| ClientError::Invalid(e.to_string()))?;
        retry(&self.retry, |_| self.request_once(method, &raw)).await
    }

    /// `opportunity.create`. Without [`CreateOpportunity::idempotency_key`] the client makes a
    /// UUID v4 key for this call and keeps it across its retries.
    pub async fn create(&self, params: CreateOpportunity) -> Result<Opportunity, ClientError> {
        let mut params = params;
        params.idempotency_key.get_or_insert_with(new_key);
        self.call("opportunity.create", &params).await
    }

    /// `opportunity.get` of an id (or of [`GetOpportunity`] with a workspace).
    pub async fn get(&self, params: impl Into<GetOpportunity>) -> Result<Opportunity, ClientError> {
        self.call("opportunity.get", &params.into()).await
    }

    /// `opportunity.list`: one page; pass its `next_cursor` as [`ListOpportunities::cursor`].
    pub async fn list(&self, params: &ListOpportunities) -> Result<OpportunityPage, ClientError> {
        self.call("opportunity.list", params).await
    }

    /// `opportunity.update`, with an idempotency key as for [`Client::create`].
    pub async fn update(&self, params: UpdateOpportunity) -> Result<Opportunity, ClientError> {
        let mut params = params;
        params.idempotency_key.get_or_insert_with(new_key);
        self.call("opportunity.update", &params).await
    }

    /// `opportunity.archive`, with an idempotency key as for [`Client::create`].
    pub async fn archive(&self, params: ArchiveOpportunity) -> Result<Opportunity, ClientError> {
        let mut params = params;
        params.idempotency_key.get_or_insert_with(new_key);
        self.call("opportunity.archive", &params).await
    }

    /// `opportunity.restore`, with an idempotency key as for [`Client::create`].
    pub async fn restore(&self, params: RestoreOpportunity) -> Result<Opportunity, ClientError> {
        let mut params = params;
        params.idempotency_key.get_or_insert_with(new_key);
        self.call("opportunity.restore", &params).await
    }

    /// `opportunity.changes`: one page of events; pass `next_since` back as [`Changes::since`].
    pub async fn changes(&self, params: &Changes) -> Result<ChangesPage, ClientError> {
        self.call("opportunity.changes", params).await
    }

    async fn open_subscription(&self, params: &Subscribe) -> Result<Subscription<OpportunityEvent>, ClientError> {
        let raw = serde_json::value::to_raw_value(params).map_err(|e| ClientError::Invalid(e.to_string()))?;
        match &*self.transport {
            Transport::Http(_) => Err(ClientError::Invalid(
                "opportunity.subscribe needs a WebSocket client (Client::ws); over HTTP, poll changes".into(),
            )),
            Transport::Ws(ws) => ws
                .client()
                .await?
                .subscribe("opportunity.subscribe", RawParams(raw), "opportunity.unsubscribe")
                .await
                .map_err(ClientError::from),
        }
    }

    /// `opportunity.subscribe` (WebSocket only): the `opportunity.changed` events as a stream.
    ///
    /// The stream remembers the last `eventId` it yielded and, when the subscription ends
    /// without the caller dropping the stream (lost connection, `slow_consumer`, …), resumes
    /// with `since` = that id, under the client's [`ReconnectPolicy`]: no event is missed or
    /// repeated across a resume. Before the first event, a resume uses the caller's `since`
    /// (when none was given, events committed while disconnected before the first event are not
    /// replayed: give a `since`, e.g. the `next_since` of [`Client::changes`], to rule that out).
    /// Dropping the stream unsubscribes.
    pub fn subscribe(&self, params: Subscribe) -> impl Stream<Item = Result<OpportunityEvent, ClientError>> + Send {
        let state = SubscriptionState {
            client: self.clone(),
            params,
            subscription: None,
            started: Instant::now(),
            failures: 0,
            last_problem: String::new(),
            done: false,
        };
        futures_util::stream::unfold(state, SubscriptionState::next)
    }
}

fn new_key() -> String {
    Uuid::new_v4().to_string()
}

/// Runs `attempt` (given its 1-based number) until it succeeds, fails in a way `policy` does not
/// retry, or the attempts are used up.
pub(crate) async fn retry<T, F, Fut>(policy: &RetryPolicy, mut attempt: F) -> Result<T, ClientError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut number = 1;
    loop {
        match attempt(number).await {
            Err(error) if policy.should_retry(&error, number) => {
                tracing::debug!(attempt = number, %error, "retrying");
                tokio::time::sleep(policy.backoff(number)).await;
                number += 1;
            }
            other => return other,
        }
    }
}

struct SubscriptionState {
    client: Client,
    params: Subscribe,
    subscription: Option<Subscription<OpportunityEvent>>,
    started: Instant,
    failures: u32,
    last_problem: String,
    done: bool,
}

impl SubscriptionState {
    async fn next(mut self) -> Option<(Result<OpportunityEvent, ClientError>, Self)> {
        let policy = self.client.reconnect;
        loop {
            if self.done {
                return None;
            }
            let Some(subscription) = self.subscription.as_mut() else {
                if self.failures > 0 {
                    tokio::time::sleep(policy.backoff(self.failures)).await;
                }
                match self.client.open_subscription(&self.params).await {
                    Ok(subscription) => {
                        self.subscription = Some(subscription);
                        self.started = Instant::now();
                    }
                    Err(error) => {
                        let mendable = error.is_transport() || error.retryable();
                        if mendable && self.failures < policy.max_attempts {
                            self.failures += 1;
                            self.last_problem = error.to_string();
                            continue;
                        }
                        self.done = true;
                        let error = if mendable && self.failures > 0 {
                            ClientError::SubscriptionLost { attempts: self.failures, last: error.to_string() }
                        } else {
                            error
                        };
                        return Some((Err(error), self));
                    }
                }
                continue;
            };
            match subscription.next().await {
                Some(Ok(event)) => {
                    self.params.since = Some(event.event_id.clone());
                    self.failures = 0;
                    return Some((Ok(event), self));
                }
                Some(Err(error)) => return Some((Err(ClientError::Decode(error.to_string())), self)),
                None => {
                    let reason = subscription.close_reason();
                    self.subscription = None;
                    if self.started.elapsed() >= policy.stable_after {
                        self.failures = 0;
                    }
                    self.last_problem = format!("the subscription ended ({reason:?})");
                    tracing::debug!(since = ?self.params.since, problem = %self.last_problem, "resubscribing");
                    if self.failures >= policy.max_attempts {
                        self.done = true;
                        let error = ClientError::SubscriptionLost {
                            attempts: self.failures,
                            last: std::mem::take(&mut self.last_problem),
                        };
                        return Some((Err(error), self));
                    }
                    self.failures += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::RpcError;
    use std::sync::Mutex;

    fn unavailable() -> ClientError {
        ClientError::Rpc(Box::new(RpcError {
            code: -32603,
            message: "Service unavailable".into(),
            data_code: Some("SERVICE_UNAVAILABLE".into()),
            http_status: Some(503),
            field_errors: Default::default(),
            form_errors: vec![],
            reason: None,
            retryable: true,
            current_version: None,
            resume_from: None,
            request_id: Some("r".into()),
            detail: None,
            data: None,
        }))
    }

    fn fast() -> RetryPolicy {
        RetryPolicy { initial_backoff: Duration::from_millis(1), ..RetryPolicy::default() }
    }

    /// The same serialized params, key included, are sent on every attempt.
    #[tokio::test]
    async fn retries_retryable_errors_with_the_same_params() {
        let mut params = CreateOpportunity::new(Uuid::nil(), "t", crate::PipelineType::Other);
        params.idempotency_key.get_or_insert_with(new_key);
        let raw = serde_json::value::to_raw_value(&params).unwrap();
        let seen = Mutex::new(Vec::new());
        let result: Result<u32, _> = retry(&fast(), |n| {
            seen.lock().unwrap().push(raw.get().to_string());
            async move { if n < 3 { Err(unavailable()) } else { Ok(n) } }
        })
        .await;
        assert_eq!(result.unwrap(), 3);
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.len(), 3);
        assert!(seen.iter().all(|s| s == &seen[0] && s.contains("idempotencyKey")));
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts_and_not_on_other_errors() {
        let count = Mutex::new(0);
        let result: Result<(), _> = retry(&fast(), |_| {
            *count.lock().unwrap() += 1;
            async { Err(unavailable()) }
        })
        .await;
        assert!(result.unwrap_err().retryable());
        assert_eq!(*count.lock().unwrap(), 3);

        *count.lock().unwrap() = 0;
        let result: Result<(), _> = retry(&fast(), |_| {
            *count.lock().unwrap() += 1;
            async { Err(ClientError::Decode("x".into())) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(*count.lock().unwrap(), 1);

        *count.lock().unwrap() = 0;
        let result: Result<(), _> = retry(&RetryPolicy::none(), |_| {
            *count.lock().unwrap() += 1;
            async { Err(unavailable()) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(*count.lock().unwrap(), 1);
    }

    #[test]
    fn backoff_doubles_up_to_the_bound() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(10), Duration::from_secs(2));
    }
}

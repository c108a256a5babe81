//! The WebSocket relay of the edge. jsonrpsee's WebSocket loop reads every message as it comes,
//! runs it on a task of its own, answers some malformed messages in its own shape, and takes a
//! call whose id it cannot hold for a notification. So the edge takes the upgrade itself and
//! relays messages to jsonrpsee over an in-process connection, which lets it:
//!
//! - read a message from the peer only while its answers are few (at most
//!   [`MAX_OUTSTANDING`] messages unanswered, at most [`MAX_PENDING_PER_CONNECTION`] bytes of
//!   answers not yet written, and the server-wide budget not spent): a peer that does not read
//!   stops being read, and the socket's write timeout closes it if it stays stuck;
//! - refuse in the shape of CONTRACT.md §4 what is not a JSON-RPC request (not JSON, not an
//!   object or array, `jsonrpc` other than "2.0", a member twice, a message over
//!   `MAX_REQUEST_BYTES`) before anything runs;
//! - swap ids jsonrpsee cannot hold for placeholders and put them back in the answers, as the
//!   HTTP tier does, so that every call that runs is answered with its id as written;
//! - ping the peer and close the connection when it stops answering, or when it is idle: no live
//!   subscription, no call unanswered and no message for `REQUEST_TIMEOUT`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::io::{BufReader, BufWriter};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use jsonrpsee::server::{HttpBody, HttpRequest, HttpResponse};
use serde_json::value::RawValue;
use tokio::sync::{Notify, mpsc};
use tokio_util::compat::TokioAsyncReadCompatExt;
use tower::Service;

use crate::compat::{Swapped, swap_unsupported_ids};
use crate::error::ApiError;
use crate::http::{BoxError, CallContext, error_response};
use crate::serve::Ledger;

/// Messages of one connection relayed and not yet answered; more are not read.
pub const MAX_OUTSTANDING: usize = 16;
/// Answer bytes of one connection not yet written; above it, no more messages are read.
pub const MAX_PENDING_PER_CONNECTION: usize = 1024 * 1024;
/// The prefix of the placeholders that stand for ids jsonrpsee cannot hold.
const PLACEHOLDER: &str = "\"opportunity-service-id-";

/// What the relay settings are.
#[derive(Debug, Clone, Copy)]
pub struct RelayConfig {
    /// Larger messages from the peer are refused with PAYLOAD_TOO_LARGE.
    pub max_request_bytes: u32,
    /// The largest answer jsonrpsee makes.
    pub max_response_bytes: u32,
    /// How often the peer is pinged; one that is silent for two intervals is disconnected.
    pub ping_interval: Duration,
    /// `REQUEST_TIMEOUT`: a connection with no live subscription and no call unanswered that
    /// sends no message for this time is idle, and closed (CONTRACT.md §2). Pongs are not
    /// messages: a peer that only answers pings is idle.
    pub idle_timeout: Duration,
}

/// The relay's count of unanswered messages, shared with the RPC middleware (through the
/// calls' extensions), which settles messages that get no answer (notifications) and records
/// the size of each answer in the socket's ledger.
#[derive(Debug)]
pub struct Gate {
    outstanding: AtomicUsize,
    settled: Notify,
    ledger: Arc<Ledger>,
}

impl Gate {
    fn new(ledger: Arc<Ledger>) -> Self {
        Self { outstanding: AtomicUsize::new(0), settled: Notify::new(), ledger }
    }

    /// A relayed message was answered, or will not be.
    pub fn settle(&self) {
        let _ = self.outstanding.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        self.settled.notify_waiters();
    }

    /// An answer of `bytes` was made and waits to be written.
    pub fn record(&self, bytes: usize) {
        self.ledger.record(bytes);
    }

    async fn wait_below(&self, limit: usize) {
        loop {
            let settled = self.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            if self.outstanding.load(Ordering::Acquire) < limit {
                return;
            }
            settled.await;
        }
    }
}

type Stream = BufReader<BufWriter<tokio_util::compat::Compat<TokioIo<hyper::upgrade::Upgraded>>>>;
type InnerStream = BufReader<BufWriter<tokio_util::compat::Compat<tokio::io::DuplexStream>>>;

/// Answers a WebSocket handshake whose token was checked: connects to jsonrpsee in-process
/// (refused there, e.g. over jsonrpsee's connection limit, the handshake is refused too), then
/// answers 101 and relays the connection.
pub async fn accept<S>(
    request: HttpRequest,
    context: CallContext,
    inner: S,
    config: RelayConfig,
    ledger: Arc<Ledger>,
) -> Result<HttpResponse, BoxError>
where
    S: Service<HttpRequest, Response = HttpResponse, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut handshake = soketto::handshake::http::Server::new();
    let response = match handshake.receive_request(&request) {
        Ok(response) => response,
        Err(e) => {
            let error = ApiError::BadRequest(format!("not a valid WebSocket handshake: {e}"));
            return Ok(error_response(StatusCode::BAD_REQUEST, error));
        }
    };
    let gate = Arc::new(Gate::new(ledger.clone()));
    let subscriptions = context.subscriptions.clone();
    let (near, far) = tokio::io::duplex(64 * 1024);
    let service = {
        let gate = gate.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let mut request = request.map(HttpBody::new);
            request.extensions_mut().insert(context.clone());
            request.extensions_mut().insert(gate.clone());
            inner.clone().call(request)
        })
    };
    tokio::spawn(async move {
        let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(far), service);
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "the in-process WebSocket connection ended with an error");
        }
    });
    let mut client = soketto::handshake::Client::new(BufReader::new(BufWriter::new(near.compat())), "localhost", "/");
    match client.handshake().await {
        Ok(soketto::handshake::ServerResponse::Accepted { .. }) => {}
        Ok(soketto::handshake::ServerResponse::Rejected { status_code }) => {
            let status = StatusCode::from_u16(status_code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let reason = if status == StatusCode::TOO_MANY_REQUESTS { "too_many_connections" } else { "unavailable" };
            return Ok(crate::http::busy_response(status, reason));
        }
        Ok(soketto::handshake::ServerResponse::Redirect { .. }) | Err(_) => {
            return Ok(crate::http::busy_response(StatusCode::SERVICE_UNAVAILABLE, "unavailable"));
        }
    }
    let mut inner_builder = client.into_builder();
    inner_builder.set_max_message_size(config.max_response_bytes as usize + 64 * 1024);
    let (inner_tx, inner_rx) = inner_builder.finish();
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(request).await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade failed");
                return;
            }
        };
        let stream = BufReader::new(BufWriter::new(TokioIo::new(upgraded).compat()));
        let mut builder = handshake.into_builder(stream);
        builder.set_max_message_size(config.max_request_bytes as usize);
        let (peer_tx, peer_rx) = builder.finish();
        let peer = Peer { tx: peer_tx, rx: peer_rx };
        relay(peer, Inner { tx: inner_tx, rx: inner_rx }, Links { gate, ledger, subscriptions }, config).await;
    });
    Ok(response.map(|()| HttpBody::empty()))
}

struct Peer {
    tx: soketto::Sender<Stream>,
    rx: soketto::Receiver<Stream>,
}

struct Inner {
    tx: soketto::Sender<InnerStream>,
    rx: soketto::Receiver<InnerStream>,
}

/// What the relay shares with the calls of its connection: the count of unanswered messages,
/// the ledger of answers not yet written, and the places of its live subscriptions.
struct Links {
    gate: Arc<Gate>,
    ledger: Arc<Ledger>,
    subscriptions: Option<Arc<tokio::sync::Semaphore>>,
}

/// Whether the connection has a live subscription (one holds a place of the connection's
/// semaphore until it ends).
fn subscribed(subscriptions: Option<&tokio::sync::Semaphore>) -> bool {
    subscriptions.is_some_and(|places| {
        places.available_permits() < crate::rpc::changes::MAX_SUBSCRIPTIONS_PER_CONNECTION as usize
    })
}

/// Milliseconds since `start`, for the last time the peer was heard from.
fn millis_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

async fn relay(peer: Peer, inner: Inner, links: Links, config: RelayConfig) {
    let Peer { tx: mut peer_tx, rx: mut peer_rx } = peer;
    let Inner { tx: mut inner_tx, rx: mut inner_rx } = inner;
    let Links { gate, ledger, subscriptions } = links;
    let swaps: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let start = Instant::now();
    // When the peer was last heard from (any frame), and when a message last went either way
    // (milliseconds since `start`).
    let heard = Arc::new(AtomicU64::new(0));
    let active = Arc::new(AtomicU64::new(0));
    // Whether the reader waits in `receive` (not for room to relay), and whether the writer has
    // decided to close as idle. A message is taken (counted as activity, or as unanswered)
    // and that decision made under one lock: a message read as the connection closes is never
    // run (it could not be answered).
    let receiving = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let closing = Arc::new(Mutex::new(false));
    // Answers the relay makes itself, and answers from jsonrpsee; each holds one message.
    let (direct_tx, mut direct_rx) = mpsc::channel::<String>(1);
    let (answer_tx, mut answer_rx) = mpsc::channel::<Vec<u8>>(1);

    let reader = {
        let (gate, swaps, heard, active) = (gate.clone(), swaps.clone(), heard.clone(), active.clone());
        let (receiving, closing, counted) = (receiving.clone(), closing.clone(), gate.clone());
        // Takes a message from the peer: false once the connection closes as idle.
        let take = move |relayed: bool| {
            let closing = closing.lock().expect("closing lock");
            if *closing {
                return false;
            }
            active.store(millis_since(start), Ordering::Relaxed);
            if relayed {
                counted.outstanding.fetch_add(1, Ordering::AcqRel);
            }
            true
        };
        async move {
            loop {
                gate.wait_below(MAX_OUTSTANDING).await;
                ledger.wait_below(MAX_PENDING_PER_CONNECTION).await;
                ledger.budget().wait_available().await;
                let mut data = Vec::new();
                receiving.store(true, Ordering::Release);
                let received = peer_rx.receive(&mut data).await;
                receiving.store(false, Ordering::Release);
                match received {
                    Ok(soketto::Incoming::Data(_)) => {}
                    Ok(soketto::Incoming::Pong(_)) => {
                        heard.store(millis_since(start), Ordering::Relaxed);
                        continue;
                    }
                    Ok(soketto::Incoming::Closed(_)) | Err(soketto::connection::Error::Closed) => return,
                    Err(soketto::connection::Error::MessageTooLarge { .. }) => {
                        heard.store(millis_since(start), Ordering::Relaxed);
                        if !take(false) {
                            continue; // closing: read on until the peer's Close
                        }
                        let message =
                            format!("the message exceeds MAX_REQUEST_BYTES ({} bytes)", config.max_request_bytes);
                        if direct_tx.send(answer_text("null", ApiError::PayloadTooLarge(message))).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "WebSocket peer failed");
                        return;
                    }
                }
                heard.store(millis_since(start), Ordering::Relaxed);
                match inspect(data) {
                    Verdict::Refuse(text) => {
                        if take(false) && direct_tx.send(text).await.is_err() {
                            return;
                        }
                    }
                    Verdict::Relay(bytes, placeholders) => {
                        if !take(true) {
                            continue; // closing: not run, as it could not be answered
                        }
                        if !placeholders.is_empty() {
                            swaps.lock().expect("swaps lock").extend(placeholders);
                        }
                        let text = String::from_utf8(bytes.to_vec()).expect("checked UTF-8");
                        if inner_tx.send_text_owned(text).await.is_err() || inner_tx.flush().await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    };

    let pump = async move {
        loop {
            let mut data = Vec::new();
            match inner_rx.receive_data(&mut data).await {
                Ok(_) => {
                    if answer_tx.send(data).await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    };

    let writer = async move {
        let period = config.ping_interval;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let silent_limit = u64::try_from((period * 2).as_millis()).unwrap_or(u64::MAX);
        // Idleness is looked at a few times per `REQUEST_TIMEOUT` (at most each second), so an
        // idle connection is closed within a quarter of it (at most a second) after its time.
        let idle_limit = u64::try_from(config.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let look = (config.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut idle = tokio::time::interval_at(tokio::time::Instant::now() + look, look);
        idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_subscribed = false;
        loop {
            let sent = tokio::select! {
                _ = idle.tick() => {
                    let mut closing = closing.lock().expect("closing lock");
                    let now_subscribed = subscribed(subscriptions.as_deref());
                    if was_subscribed && !now_subscribed {
                        // A subscription ended: its place is given back just before its last
                        // notification is made, which must still reach the peer.
                        active.store(millis_since(start), Ordering::Relaxed);
                    }
                    was_subscribed = now_subscribed;
                    let quiet = millis_since(start).saturating_sub(active.load(Ordering::Relaxed));
                    if quiet > idle_limit
                        && !now_subscribed
                        && gate.outstanding.load(Ordering::Acquire) == 0
                        && receiving.load(Ordering::Acquire)
                    {
                        *closing = true;
                        tracing::debug!("WebSocket idle for REQUEST_TIMEOUT; closing");
                        break;
                    }
                    continue;
                }
                _ = ping.tick() => {
                    if millis_since(start).saturating_sub(heard.load(Ordering::Relaxed)) > silent_limit {
                        tracing::debug!("WebSocket peer silent for two ping intervals; disconnecting");
                        break;
                    }
                    let empty: &[u8] = &[];
                    let ping = soketto::data::ByteSlice125::try_from(empty).expect("an empty ping fits");
                    peer_tx.send_ping(ping).await
                }
                Some(text) = direct_rx.recv() => peer_tx.send_text_owned(text).await,
                answer = answer_rx.recv() => {
                    let Some(answer) = answer else { break };
                    let is_answer = !answer.starts_with(br#"{"jsonrpc":"2.0","method""#);
                    let text = restore(answer, &swaps);
                    let sent = peer_tx.send_text_owned(text).await;
                    // An answer, or a subscription's notification (its last one ends it: the
                    // peer has `REQUEST_TIMEOUT` from then to subscribe again).
                    active.store(millis_since(start), Ordering::Relaxed);
                    if is_answer {
                        gate.settle();
                    }
                    sent
                }
            };
            if sent.is_err() || peer_tx.flush().await.is_err() {
                return;
            }
        }
        let _ = peer_tx.close().await;
        // The peer's Close ends the reader, and so the relay; one that does not answer is
        // dropped after this grace (a peer gone without a word holds nothing longer).
        tokio::time::sleep(config.idle_timeout.min(CLOSE_GRACE)).await;
    };

    tokio::select! {
        _ = reader => {}
        _ = writer => {}
        // When jsonrpsee's side ends, the writer sees it (no more answers), closes and ends.
        _ = async { pump.await; std::future::pending::<()>().await } => {}
    }
}

/// How long, at most, the relay waits for the peer's Close after sending its own.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// A message from the peer: relayed (maybe with ids swapped), or refused with this answer.
enum Verdict {
    Relay(Bytes, Vec<(String, String)>),
    Refuse(String),
}

/// An error answer with `id` written as JSON text.
fn answer_text(id: &str, error: ApiError) -> String {
    let error = serde_json::to_string(&error.into_error_object()).expect("an error object serializes");
    format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{error}}}"#)
}

/// The members of a single request that decide whether it is one (a member twice fails).
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    #[allow(dead_code)]
    params: Option<&'a RawValue>,
}

/// Decides what becomes of one message from the peer (the same rules as over HTTP).
fn inspect(data: Vec<u8>) -> Verdict {
    if std::str::from_utf8(&data).is_err() {
        return Verdict::Refuse(answer_text("null", ApiError::Parse));
    }
    let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(&data).is_ok();
    if !is_json {
        return Verdict::Refuse(answer_text("null", ApiError::Parse));
    }
    match data.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {
            let envelope = match serde_json::from_slice::<Envelope<'_>>(&data) {
                Ok(envelope) => envelope,
                Err(e) => {
                    let detail = if e.to_string().contains("duplicate field") {
                        crate::compat::DUPLICATE_MEMBER
                    } else {
                        "not a JSON-RPC 2.0 request"
                    };
                    return Verdict::Refuse(answer_text("null", ApiError::BadRequest(detail.into())));
                }
            };
            let id = envelope.id.map(RawValue::get).filter(|id| {
                id.starts_with(|c: char| c == '"' || c == '-' || c == 'n' || c.is_ascii_digit())
                    && (!id.starts_with('"') || serde_json::from_str::<String>(id).is_ok())
            });
            let echo = id.unwrap_or("null");
            if envelope.jsonrpc.map(RawValue::get) != Some("\"2.0\"") {
                let error = ApiError::BadRequest("jsonrpc must be \"2.0\"".into());
                return Verdict::Refuse(answer_text(echo, error));
            }
            if envelope.method.is_none_or(|m| serde_json::from_str::<String>(m.get()).is_err()) {
                let error = ApiError::BadRequest("method must be a string".into());
                return Verdict::Refuse(answer_text(echo, error));
            }
            if envelope.id.is_some() && id.is_none() {
                let error = ApiError::BadRequest(crate::compat::BAD_ID.into());
                return Verdict::Refuse(answer_text("null", error));
            }
        }
        Some(b'[') => {}
        _ => return Verdict::Refuse(answer_text("null", ApiError::BadRequest("not a JSON-RPC 2.0 request".into()))),
    }
    let bytes = Bytes::from(data);
    match swap_unsupported_ids(&bytes) {
        Swapped::Unchanged => Verdict::Relay(bytes, Vec::new()),
        Swapped::Body(swapped, swaps) => {
            Verdict::Relay(swapped, swaps.into_iter().map(|s| (s.placeholder, s.original)).collect())
        }
        Swapped::Invalid(why) => Verdict::Refuse(answer_text("null", ApiError::BadRequest(why.into()))),
    }
}

/// Rewrites into §4's shape any error jsonrpsee made on its own, then puts the ids the relay
/// swapped back into the answer: in this order, so that the ids never go through
/// `serde_json::Value` (which would write `1e2` as `100.0`).
fn restore(answer: Vec<u8>, swaps: &Mutex<HashMap<String, String>>) -> String {
    let mut text = String::from_utf8(answer).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    if text.contains("\"error\"")
        && crate::compat::has_raw_error(text.as_bytes())
        && let Ok(mut value) = serde_json::from_str::<serde_json::Value>(&text)
        && crate::error::normalize_response_value(&mut value)
    {
        text = value.to_string();
    }
    if text.contains(PLACEHOLDER) {
        let mut swaps = swaps.lock().expect("swaps lock");
        let mut out = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(at) = rest.find(PLACEHOLDER) {
            out.push_str(&rest[..at]);
            let candidate = &rest[at..];
            // The placeholder: the prefix, 32 hex digits, a closing quote.
            let len = PLACEHOLDER.len() + 33;
            match candidate.get(..len).and_then(|p| swaps.remove(p).map(|original| (p.len(), original))) {
                Some((used, original)) => {
                    out.push_str(&original);
                    rest = &candidate[used..];
                }
                None => {
                    out.push_str(&candidate[..1]);
                    rest = &candidate[1..];
                }
            }
        }
        out.push_str(rest);
        text = out;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(data: &str) -> serde_json::Value {
        match inspect(data.as_bytes().to_vec()) {
            Verdict::Refuse(text) => serde_json::from_str(&text).unwrap(),
            Verdict::Relay(..) => panic!("{data} was relayed"),
        }
    }

    #[test]
    fn messages_that_are_not_requests_are_refused_in_the_contract_shape() {
        for (data, code, name) in [
            ("hello", -32700, "PARSE_ERROR"),
            ("{\"a\":", -32700, "PARSE_ERROR"),
            ("{}", -32600, "BAD_REQUEST"),
            ("null", -32600, "BAD_REQUEST"),
            ("\"x\"", -32600, "BAD_REQUEST"),
            (r#"{"jsonrpc":"1.0","id":1,"method":"a.b"}"#, -32600, "BAD_REQUEST"),
            (r#"{"jsonrpc":"2.0","id":1,"method":"a.b","method":"c.d"}"#, -32600, "BAD_REQUEST"),
            (r#"{"jsonrpc":"2.0","id":true,"method":"a.b"}"#, -32600, "BAD_REQUEST"),
            (r#"{"jsonrpc":"2.0","id":1,"method":5}"#, -32600, "BAD_REQUEST"),
        ] {
            let answer = refused(data);
            assert_eq!(answer["error"]["code"], code, "{data}: {answer}");
            assert_eq!(answer["error"]["data"]["code"], name, "{data}: {answer}");
        }
        // The id is echoed as written when it can be read.
        assert_eq!(refused(r#"{"jsonrpc":"1.0","id":1.5,"method":"a.b"}"#)["id"], serde_json::json!(1.5));
    }

    #[test]
    fn ids_jsonrpsee_cannot_hold_are_swapped_and_restored() {
        let data = r#"{"jsonrpc":"2.0","id":1e2,"method":"a.b"}"#;
        let Verdict::Relay(bytes, swaps) = inspect(data.as_bytes().to_vec()) else { panic!("relayed") };
        assert_eq!(swaps.len(), 1);
        let relayed = String::from_utf8(bytes.to_vec()).unwrap();
        assert!(relayed.contains(PLACEHOLDER), "{relayed}");
        let swaps = Mutex::new(swaps.into_iter().collect::<HashMap<_, _>>());
        let at = relayed.find(PLACEHOLDER).unwrap();
        let placeholder = &relayed[at..at + PLACEHOLDER.len() + 33];
        let answer = format!(r#"{{"jsonrpc":"2.0","id":{placeholder},"result":true}}"#);
        assert_eq!(restore(answer.into_bytes(), &swaps), r#"{"jsonrpc":"2.0","id":1e2,"result":true}"#);
        assert!(swaps.lock().unwrap().is_empty(), "a restored id is forgotten");
        let plain = r#"{"jsonrpc":"2.0","id":7,"method":"a.b"}"#;
        assert!(matches!(inspect(plain.as_bytes().to_vec()), Verdict::Relay(_, s) if s.is_empty()));
    }
}

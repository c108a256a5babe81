//! The accept loop and what it puts around each socket (CONTRACT.md §2, limits):
//!
//! - a cap on open sockets: `MAX_CONNECTIONS` for calls (HTTP and WebSocket alike), a few more
//!   for the probes (`/health`, `/ready`, `/metrics`; other requests on them get 429), and beyond
//!   that a clean refusal (HTTP 503 with a JSON-RPC error, then the socket is closed);
//! - HTTP/1.1 served by hyper with a header timer, so that a connection that sends no complete
//!   request headers within `REQUEST_TIMEOUT` — a fresh one, or an idle kept-alive one — is
//!   closed;
//! - a write timeout: a socket whose writes make no progress for `REQUEST_TIMEOUT` (a client
//!   that does not read) fails, which closes its connection;
//! - a ledger of the answer bytes produced for the socket and not yet written, counted per
//!   socket and in total ([`AnswerBudget`]), which the HTTP tier and the WebSocket relay consult
//!   before they read more requests;
//! - `accept` failures (out of file descriptors) back off and are logged at most once a second.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use jsonrpsee::Methods;
use jsonrpsee::server::{HttpBody, StopHandle, TowerServiceBuilder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// How long to wait before accepting again after `accept` failed.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Sockets beyond `MAX_CONNECTIONS` that are still served, for the probes only.
pub const PROBE_HEADROOM: usize = 16;
/// Refusals being written at once; sockets beyond these are closed without a word.
const REFUSALS_AT_ONCE: usize = 64;
/// How long a refused socket is given to take its refusal.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// The answer bytes produced and not yet written, over every socket. Above the limit, new HTTP
/// calls are refused (SERVICE_UNAVAILABLE, retryable) and WebSocket connections are not read.
#[derive(Debug)]
pub struct AnswerBudget {
    bytes: AtomicUsize,
    limit: usize,
    freed: Notify,
}

impl AnswerBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { bytes: AtomicUsize::new(0), limit, freed: Notify::new() }
    }

    /// Bytes waiting to be written now.
    pub fn pending(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether the budget is spent.
    pub fn is_spent(&self) -> bool {
        self.pending() >= self.limit
    }

    /// Resolves once the budget is not spent.
    pub async fn wait_available(&self) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if !self.is_spent() {
                return;
            }
            freed.await;
        }
    }

    pub(crate) fn add(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sub(&self, n: usize) {
        let before = self.bytes.fetch_sub(n, Ordering::Relaxed);
        if before >= self.limit && before - n < self.limit {
            self.freed.notify_waiters();
        }
    }
}

/// The answer bytes of one socket produced and not yet written.
#[derive(Debug)]
pub struct Ledger {
    state: Mutex<LedgerState>,
    budget: Arc<AnswerBudget>,
    written: Notify,
}

#[derive(Debug, Default)]
struct LedgerState {
    pending: usize,
    closed: bool,
}

impl Ledger {
    fn new(budget: Arc<AnswerBudget>) -> Self {
        Self { state: Mutex::default(), budget, written: Notify::new() }
    }

    /// Counts `n` bytes of answer produced for this socket.
    pub fn record(&self, n: usize) {
        let mut state = self.state.lock().expect("ledger lock");
        if !state.closed {
            state.pending += n;
            self.budget.add(n);
        }
    }

    /// Bytes of this socket waiting to be written.
    pub fn pending(&self) -> usize {
        self.state.lock().expect("ledger lock").pending
    }

    /// The budget of every socket.
    pub fn budget(&self) -> &Arc<AnswerBudget> {
        &self.budget
    }

    /// Resolves once at most `limit` bytes of this socket wait to be written.
    pub async fn wait_below(&self, limit: usize) {
        loop {
            let written = self.written.notified();
            tokio::pin!(written);
            written.as_mut().enable();
            if self.pending() <= limit {
                return;
            }
            written.await;
        }
    }

    /// `n` bytes went out on the socket (answers or anything else: the count never goes below 0).
    fn written(&self, n: usize) {
        let mut state = self.state.lock().expect("ledger lock");
        let released = n.min(state.pending);
        if released > 0 {
            state.pending -= released;
            self.budget.sub(released);
            self.written.notify_waiters();
        }
    }

    fn close(&self) {
        let mut state = self.state.lock().expect("ledger lock");
        state.closed = true;
        self.budget.sub(std::mem::take(&mut state.pending));
        self.written.notify_waiters();
    }
}

/// What the accept loop tells the HTTP tier about the socket of a request (in its extensions).
#[derive(Debug, Clone)]
pub struct SocketInfo {
    /// The socket's answer ledger.
    pub ledger: Arc<Ledger>,
    /// A socket beyond `MAX_CONNECTIONS`: served for the probes only.
    pub probe_only: bool,
}

/// A socket with a write timeout, an answer ledger and its slot of the socket cap.
struct Guarded {
    inner: TcpStream,
    ledger: Arc<Ledger>,
    write_timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    _slot: OwnedSemaphorePermit,
}

impl Guarded {
    /// Fails a write or flush that has made no progress for the write timeout.
    fn stall<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Pending => {
                let timeout = self.write_timeout;
                let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match stalled.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the peer has not read for the write timeout",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.ledger.close();
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.ledger.written(n);
        }
        self.stall(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = poll {
            self.ledger.written(n);
        }
        self.stall(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.stall(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// File descriptors kept for everything but sockets (database files and connections, the
/// runtime, logs), on top of the probes' headroom and the refusals.
const FD_RESERVE: usize = 64;

/// The soft limit on open files of this process, from `/proc/self/limits` (Linux); `None`
/// elsewhere or when unlimited.
fn fd_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// `MAX_CONNECTIONS`, lowered so that the sockets it allows (with the probes' headroom and the
/// refusals) fit under the file-descriptor limit with `reserve` descriptors to spare: a socket
/// beyond the cap is then refused cleanly instead of failing `accept` with "too many open
/// files".
pub fn socket_cap(max_connections: usize, reserve: usize) -> usize {
    let Some(limit) = fd_limit() else { return max_connections };
    let room = limit.saturating_sub(PROBE_HEADROOM + REFUSALS_AT_ONCE + FD_RESERVE + reserve).max(1);
    if room < max_connections {
        tracing::warn!(
            max_connections,
            fd_limit = limit,
            serving = room,
            "MAX_CONNECTIONS does not fit under the open-file limit; serving fewer sockets"
        );
        room
    } else {
        max_connections
    }
}

/// Settings of the accept loop.
#[derive(Debug, Clone)]
pub struct SocketLimits {
    /// Sockets served for calls (`MAX_CONNECTIONS`).
    pub max_sockets: usize,
    /// Headers must arrive, and writes progress, within this time (`REQUEST_TIMEOUT`).
    pub request_timeout: Duration,
    /// The answer bytes waiting to be written, in total.
    pub budget: Arc<AnswerBudget>,
}

/// Logs `accept` failures at most once a second, with how many were not logged.
struct AcceptErrors {
    last: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    /// Records a failure; returns whether it was logged.
    fn failed(&mut self, error: &io::Error) -> bool {
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < Duration::from_secs(1)) {
            self.unlogged += 1;
            return false;
        }
        let also = std::mem::take(&mut self.unlogged);
        tracing::warn!(error = %error, also_failed = also, "accept failed; backing off");
        self.last = Some(now);
        true
    }
}

/// The refusal of a socket beyond the cap: HTTP 503 with a JSON-RPC error, then close.
fn refusal() -> Vec<u8> {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": crate::error::busy("too_many_connections")});
    let body = body.to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn refuse(mut socket: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tokio::time::timeout(REFUSAL_GRACE, async {
        socket.write_all(&refusal()).await?;
        socket.shutdown().await?;
        // Read what the peer sent, so that closing does not reset the answer away.
        let mut sink = [0u8; 4096];
        while socket.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}

/// Accepts connections until `stop` fires; each connection is served until it ends, or drained
/// gracefully on stop. The server's `stopped()` resolves once every connection has ended, since
/// each holds a clone of `stop`.
pub async fn accept_loop<RpcMiddleware, HttpMiddleware>(
    listener: TcpListener,
    builder: TowerServiceBuilder<RpcMiddleware, HttpMiddleware>,
    methods: Methods,
    stop: StopHandle,
    limits: SocketLimits,
) where
    TowerServiceBuilder<RpcMiddleware, HttpMiddleware>: Clone + Send + 'static,
    jsonrpsee::server::TowerService<RpcMiddleware, HttpMiddleware>: tower::Service<
            hyper::Request<HttpBody>,
            Response = hyper::Response<HttpBody>,
            Error = Box<dyn std::error::Error + Send + Sync>,
        > + Clone
        + Send
        + 'static,
    <jsonrpsee::server::TowerService<RpcMiddleware, HttpMiddleware> as tower::Service<hyper::Request<HttpBody>>>::Future:
        Send + 'static,
{
    let sockets = Arc::new(Semaphore::new(limits.max_sockets));
    let probes = Arc::new(Semaphore::new(PROBE_HEADROOM));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let mut errors = AcceptErrors { last: None, unlogged: 0 };
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(e) => {
                    let _ = errors.failed(&e);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = stop.clone().shutdown() => break,
        };
        let (slot, probe_only) = match sockets.clone().try_acquire_owned() {
            Ok(slot) => (slot, false),
            Err(_) => match probes.clone().try_acquire_owned() {
                Ok(slot) => (slot, true),
                Err(_) => {
                    if let Ok(refusing) = refusals.clone().try_acquire_owned() {
                        tokio::spawn(async move {
                            refuse(socket).await;
                            drop(refusing);
                        });
                    }
                    continue;
                }
            },
        };
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let ledger = Arc::new(Ledger::new(limits.budget.clone()));
        let info = SocketInfo { ledger: ledger.clone(), probe_only };
        let io = Guarded { inner: socket, ledger, write_timeout: limits.request_timeout, stalled: None, _slot: slot };
        let service = builder.clone().build(methods.clone(), stop.clone());
        let service = tower::ServiceBuilder::new()
            .map_request(move |request: hyper::Request<Incoming>| {
                let mut request = request.map(HttpBody::new);
                request.extensions_mut().insert(info.clone());
                request
            })
            .service(service);
        let stop = stop.clone();
        let header_timeout = limits.request_timeout;
        tokio::spawn(async move {
            // HTTP/1.1 only (hyper-util's version sniffing waits for a first byte without a timer);
            // the header timer runs from the start, and again whenever a kept-alive connection
            // waits for its next request.
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(header_timeout);
            let connection = http.serve_connection(TokioIo::new(io), TowerToHyperService::new(service)).with_upgrades();
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stop.shutdown() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_are_logged_at_most_once_a_second() {
        let mut errors = AcceptErrors { last: None, unlogged: 0 };
        let error = io::Error::other("Too many open files");
        let logged = (0..1000).filter(|_| errors.failed(&error)).count();
        assert_eq!(logged, 1, "a burst of failures is one line");
        assert_eq!(errors.unlogged, 999, "the rest are counted for the next line");
        errors.last = Some(Instant::now() - Duration::from_secs(2));
        assert!(errors.failed(&error), "a second later, the next failure is logged");
        assert_eq!(errors.unlogged, 0);
    }

    #[tokio::test]
    async fn the_ledger_counts_per_socket_and_in_total() {
        let budget = Arc::new(AnswerBudget::new(100));
        let a = Ledger::new(budget.clone());
        let b = Ledger::new(budget.clone());
        a.record(80);
        b.record(30);
        assert!(budget.is_spent());
        a.written(50);
        assert_eq!((a.pending(), budget.pending()), (30, 60));
        assert!(!budget.is_spent());
        b.written(1000);
        assert_eq!(b.pending(), 0, "writes beyond the answers never go below zero");
        a.close();
        assert_eq!(budget.pending(), 0, "a closed socket gives its bytes back");
        a.record(10);
        assert_eq!(budget.pending(), 0, "nothing is counted for a closed socket");
        budget.wait_available().await;
        a.wait_below(0).await;
    }
}

//! The accept loop: each connection served by hyper with a timer, so that a client that stalls
//! inside the headers of a request — the first one or a later one on a kept-alive connection —
//! is cut off after `REQUEST_TIMEOUT` (jsonrpsee's own loop arms no such timer), and a failing
//! `accept` (out of file descriptors) backs off instead of spinning.

use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use jsonrpsee::Methods;
use jsonrpsee::server::{HttpBody, StopHandle, TowerServiceBuilder};
use tokio::net::TcpListener;

/// How long to wait before accepting again after `accept` failed.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections until `stop` fires; each connection is served until it ends, or drained
/// gracefully on stop. The server's `stopped()` resolves once every connection has ended, since
/// each holds a clone of `stop`.
pub async fn accept_loop<RpcMiddleware, HttpMiddleware>(
    listener: TcpListener,
    builder: TowerServiceBuilder<RpcMiddleware, HttpMiddleware>,
    methods: Methods,
    stop: StopHandle,
    header_timeout: Duration,
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
    loop {
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; backing off");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = stop.clone().shutdown() => break,
        };
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let service = builder.clone().build(methods.clone(), stop.clone());
        let service = tower::ServiceBuilder::new()
            .map_request(|request: hyper::Request<Incoming>| request.map(HttpBody::new))
            .service(service);
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut http = Builder::new(TokioExecutor::new());
            http.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
            let connection =
                http.serve_connection_with_upgrades(TokioIo::new(socket), TowerToHyperService::new(service));
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

//! opportunity-service: the JSON-RPC service behind a CRM for building-systems contractors.
//!
//! [`Application::build`] binds the listener, opens the database and assembles the server;
//! `main.rs` and the integration tests start the very same application.

pub mod auth;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod http;
pub mod metrics;
pub mod rpc;
pub mod serve;
pub mod telemetry;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use jsonrpsee::server::middleware::rpc::RpcServiceBuilder;
use jsonrpsee::server::{BatchRequestConfig, Server, ServerConfig, ServerHandle, TowerServiceBuilder};
use secrecy::SecretString;

use crate::auth::Authenticator;
use crate::config::{AuthArgs, ServeArgs};
use crate::db::{Database, DatabaseUrl, PoolOptions};
use crate::http::{EdgeLayer, EdgeState};
use crate::rpc::{AppState, CallLayer, RpcLimits};

/// How often expired idempotency keys are purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(600);
/// How long idempotency keys are kept (the contract asks for at least 24 hours).
pub const IDEMPOTENCY_KEY_TTL: chrono::TimeDelta = chrono::TimeDelta::hours(25);

/// The file name of the development secret, beside the embedded database.
pub const DEV_SECRET_FILE: &str = "jwt-secret";

/// The secret tokens are checked with: the configured one, else on the embedded database a
/// development secret kept beside it. PostgreSQL without a secret is refused.
pub fn resolve_secret(auth: &AuthArgs, url: &DatabaseUrl) -> anyhow::Result<(SecretString, bool)> {
    if let Some(secret) = &auth.auth_jwt_secret {
        if secrecy::ExposeSecret::expose_secret(secret).is_empty() {
            bail!("AUTH_JWT_SECRET is set but empty");
        }
        return Ok((secret.clone(), false));
    }
    match url {
        DatabaseUrl::Sqlite(path) => {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            let file = dir.join(DEV_SECRET_FILE);
            let (secret, _) = auth::load_or_create_dev_secret(&file)
                .with_context(|| format!("cannot create the development secret {}", file.display()))?;
            Ok((secret, true))
        }
        DatabaseUrl::Postgres(_) => bail!(
            "AUTH_JWT_SECRET is required with PostgreSQL: set it (or --auth-jwt-secret) to the HS256 secret that signs the callers' tokens"
        ),
    }
}

/// A built application, bound and ready to run.
pub struct Application {
    builder: TowerServiceBuilder<RpcStack, HttpStack>,
    listener: tokio::net::TcpListener,
    methods: jsonrpsee::RpcModule<()>,
    local_addr: SocketAddr,
    db: Database,
    socket_limits: serve::SocketLimits,
}

type RpcStack = tower::layer::util::Stack<CallLayer, tower::layer::util::Identity>;
type HttpStack = tower::layer::util::Stack<EdgeLayer, tower::layer::util::Identity>;

impl Application {
    /// Opens the database (migrating it), binds the listener and assembles the server.
    pub async fn build(settings: &ServeArgs) -> anyhow::Result<Self> {
        let url = DatabaseUrl::parse(&settings.database.database_url)?;
        let (secret, dev_mode) = resolve_secret(&settings.auth, &url)?;
        if dev_mode {
            tracing::warn!(
                "development mode: no AUTH_JWT_SECRET, tokens are checked with a generated secret beside the database (see `opportunity-service token`)"
            );
        }
        let options = PoolOptions { size: settings.database_pool_size, timeout: settings.database_timeout };
        let db = {
            let url = url.clone();
            tokio::task::spawn_blocking(move || Database::connect(url, options)).await??
        };
        let authenticator = Authenticator::new(
            &secret,
            settings.auth.auth_jwt_issuer.as_deref(),
            settings.auth.auth_jwt_audience.as_deref(),
        );

        let listener = std::net::TcpListener::bind(&settings.listen_addr)
            .with_context(|| format!("cannot listen on {}", settings.listen_addr))?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let local_addr = listener.local_addr()?;

        let max_response_bytes = settings.max_response_bytes;
        let limits =
            RpcLimits { max_batch: settings.max_batch as usize, max_response_bytes: max_response_bytes as usize };
        let config = ServerConfig::builder()
            // The edge enforces MAX_REQUEST_BYTES on what the caller sent (HTTP bodies, WebSocket
            // messages); what reaches jsonrpsee may be a little longer, with ids swapped for
            // placeholders (see `http::swap_unsupported_ids`).
            .max_request_body_size(settings.max_request_bytes.saturating_mul(2))
            .max_response_body_size(max_response_bytes)
            .max_connections(settings.max_connections)
            // The RPC middleware enforces MAX_BATCH, so that both transports refuse in §4's shape.
            .set_batch_request_config(BatchRequestConfig::Unlimited)
            // The WebSocket relay of the edge pings the real peer; jsonrpsee's side of the relay is
            // in-process.
            .disable_ws_ping()
            .build();
        let budget = Arc::new(serve::AnswerBudget::new(
            usize::try_from(settings.max_pending_response_bytes).unwrap_or(usize::MAX),
        ));
        let metrics = Arc::new(metrics::Metrics::new());
        let edge = EdgeLayer::new(Arc::new(EdgeState {
            metrics: metrics.clone(),
            auth: authenticator,
            db: db.clone(),
            ready_timeout: Duration::from_secs(2),
            max_request_bytes: settings.max_request_bytes,
            max_response_bytes: settings.max_response_bytes,
            body_timeout: settings.request_timeout,
            ws_ping_interval: settings.ws_ping_interval,
        }));
        let methods = rpc::methods(AppState { db: db.clone(), metrics: metrics.clone() })?;
        let names = rpc::MethodNames::of(&methods);
        let rpc_middleware = RpcServiceBuilder::new().layer(CallLayer { limits, metrics, names });
        let builder = Server::builder()
            .set_config(config)
            .set_http_middleware(tower::ServiceBuilder::new().layer(edge))
            .set_rpc_middleware(rpc_middleware)
            .to_service_builder();
        let socket_limits = serve::SocketLimits {
            // Each pooled database connection may hold a few files (SQLite: the database, its WAL
            // and shared memory; PostgreSQL: a socket).
            max_sockets: serve::socket_cap(
                settings.max_connections as usize,
                3 * settings.database_pool_size.unwrap_or_else(|| db::default_pool_size(&url)) as usize,
            ),
            request_timeout: settings.request_timeout,
            budget,
        };
        Ok(Self { builder, listener, methods, local_addr, db, socket_limits })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Starts serving; the handle stops it. In-flight calls finish before `stopped()` resolves.
    pub fn start(self) -> ServerHandle {
        tracing::info!(addr = %self.local_addr, backend = self.db.backend(), database = %self.db.url().redacted(), "listening on {}", self.local_addr);
        let db = self.db.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PURGE_INTERVAL);
            loop {
                tick.tick().await;
                let cutoff = chrono::Utc::now() - IDEMPOTENCY_KEY_TTL;
                match db.run(move |conn| db::opportunity::purge_idempotency_keys(conn, cutoff)).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "expired idempotency keys purged"),
                    Err(e) => tracing::warn!(error = %e, "purging idempotency keys failed"),
                }
            }
        });
        let (stop, handle) = jsonrpsee::server::stop_channel();
        tokio::spawn(serve::accept_loop(self.listener, self.builder, self.methods.into(), stop, self.socket_limits));
        handle
    }
}

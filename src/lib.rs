//! opportunity-service: the JSON-RPC service behind a CRM for building-systems contractors.
//!
//! [`Application::build`] binds the listener, opens the database and assembles the server;
//! `main.rs` and the integration tests start the very same application.

pub mod auth;
pub mod compat;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod feed;
pub mod http;
pub mod metrics;
pub mod rpc;
pub mod schema;
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

/// Messages jsonrpsee holds for a WebSocket connection until its relay takes them.
const WS_MESSAGE_BUFFER: u32 = 32;

/// How often expired idempotency keys are purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(600);
/// How often change events past `EVENT_RETENTION` are purged.
const EVENT_PURGE_INTERVAL: Duration = Duration::from_secs(30);
/// How long idempotency keys are kept (the contract asks for at least 24 hours).
pub const IDEMPOTENCY_KEY_TTL: chrono::TimeDelta = chrono::TimeDelta::hours(25);

/// The file name of the development secret, beside the embedded database.
pub const DEV_SECRET_FILE: &str = "jwt-secret";

/// The fewest bytes an HS256 secret may have: a key as long as the hash (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// Refuses a secret HS256 must not use: shorter than [`MIN_SECRET_BYTES`], or only white space.
/// `what` names where it came from, for the message.
fn check_secret(secret: &SecretString, what: &str) -> anyhow::Result<()> {
    let secret = secrecy::ExposeSecret::expose_secret(secret);
    if secret.is_empty() {
        bail!("{what} is set but empty");
    }
    if secret.trim().is_empty() {
        bail!(
            "{what} is only white space: use at least {MIN_SECRET_BYTES} random bytes, e.g. `head -c 32 /dev/urandom | base64`"
        );
    }
    if secret.len() < MIN_SECRET_BYTES {
        let (n, unit) = (secret.len(), if secret.len() == 1 { "byte" } else { "bytes" });
        bail!(
            "{what} is {n} {unit} long: an HS256 secret needs at least {MIN_SECRET_BYTES} bytes (RFC 7518 §3.2), e.g. `head -c 32 /dev/urandom | base64`"
        );
    }
    Ok(())
}

/// Where the development secret of an embedded database is kept: beside the database file.
pub fn dev_secret_path(path: &std::path::Path) -> std::path::PathBuf {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    dir.join(DEV_SECRET_FILE)
}

/// Whether [`resolve_secret`] may create the development secret: `serve` may, `token` only
/// reads the one `serve` made (a new one would sign tokens the running service refuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevSecret {
    Create,
    ReadOnly,
}

/// The secret tokens are checked with: the configured one, else on the embedded database a
/// development secret kept beside it (the path is returned too). PostgreSQL without a secret is
/// refused, and so is a secret shorter than 32 bytes or made only of white space.
pub fn resolve_secret(
    auth: &AuthArgs,
    url: &DatabaseUrl,
    dev: DevSecret,
) -> anyhow::Result<(SecretString, Option<std::path::PathBuf>)> {
    if let Some(secret) = &auth.auth_jwt_secret {
        check_secret(secret, "AUTH_JWT_SECRET")?;
        return Ok((secret.clone(), None));
    }
    match url {
        DatabaseUrl::Sqlite(path) => {
            let file = dev_secret_path(path);
            let secret = match dev {
                DevSecret::Create => {
                    auth::load_or_create_dev_secret(&file)
                        .with_context(|| format!("cannot create the development secret {}", file.display()))?
                        .0
                }
                DevSecret::ReadOnly => match std::fs::read_to_string(&file) {
                    Ok(text) if !text.trim().is_empty() => SecretString::from(text.trim().to_string()),
                    Ok(_) | Err(_) => bail!(
                        "no development secret at {}: start `opportunity-service serve` with the same DATABASE_URL first (it creates one there), or set AUTH_JWT_SECRET to the service's secret",
                        file.display()
                    ),
                },
            };
            check_secret(&secret, &format!("the development secret in {}", file.display()))?;
            Ok((secret, Some(file)))
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
    event_retention: Duration,
}

type RpcStack = tower::layer::util::Stack<CallLayer, tower::layer::util::Identity>;
type HttpStack = tower::layer::util::Stack<
    EdgeLayer,
    tower::layer::util::Stack<
        tower::util::Either<tower_http::cors::CorsLayer, tower::layer::util::Identity>,
        tower::layer::util::Identity,
    >,
>;

impl Application {
    /// Opens the database (migrating it), binds the listener and assembles the server.
    pub async fn build(settings: &ServeArgs) -> anyhow::Result<Self> {
        let url = DatabaseUrl::parse(&settings.database.database_url)?;
        let (secret, dev_secret) = resolve_secret(&settings.auth, &url, DevSecret::Create)?;
        if let Some(file) = &dev_secret {
            tracing::warn!(
                secret_file = %file.display(),
                "development mode: no AUTH_JWT_SECRET, tokens are checked with the generated secret in {} (`opportunity-service token` with the same DATABASE_URL signs with it)",
                file.display()
            );
            #[cfg(unix)]
            if let Ok(meta) = std::fs::metadata(file)
                && std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077 != 0
            {
                // Made 0600 by the service; someone changed it, or wrote the file themselves.
                tracing::warn!(
                    secret_file = %file.display(),
                    "the development secret {} can be read by other users of this machine: `chmod 600` it",
                    file.display()
                );
            }
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
            .max_subscriptions_per_connection(rpc::changes::SUBSCRIBE_CALLS_PER_CONNECTION)
            // Messages made for a WebSocket and not yet taken by its relay (answers and
            // notifications; jsonrpsee's default is 1,024). A client that does not read fills
            // these few, then its subscriptions' queues, which end it as a slow consumer: 1,024
            // notifications of large opportunities would be tens of MiB per connection.
            .set_message_buffer_capacity(WS_MESSAGE_BUFFER)
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
            allowed_origins: settings.cors_allowed_origins.clone(),
        }));
        let cursor_key = rpc::list::CursorKey::derive(secrecy::ExposeSecret::expose_secret(&secret).as_bytes());
        let feed = feed::Feed::start(db.clone());
        let methods =
            rpc::methods(AppState { db: db.clone(), metrics: metrics.clone(), cursor_key, feed }, local_addr)?;
        let names = rpc::MethodNames::of(&methods);
        let rpc_middleware =
            RpcServiceBuilder::new().layer(CallLayer { limits, metrics, names, budget: budget.clone() });
        let builder = Server::builder()
            .set_config(config)
            .set_http_middleware(
                tower::ServiceBuilder::new().option_layer(http::cors_layer(&settings.cors_allowed_origins)).layer(edge),
            )
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
        Ok(Self {
            builder,
            listener,
            methods,
            local_addr,
            db,
            socket_limits,
            event_retention: settings.event_retention,
        })
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
        let db = self.db.clone();
        let retention = chrono::TimeDelta::from_std(self.event_retention).unwrap_or(chrono::TimeDelta::MAX);
        tokio::spawn(async move {
            // Events older than EVENT_RETENTION go within a minute (CONTRACT.md §9).
            let every = EVENT_PURGE_INTERVAL.min(self.event_retention / 2).max(Duration::from_millis(100));
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let cutoff = chrono::Utc::now() - retention;
                match db.run(move |conn| db::events::purge(conn, cutoff)).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "change events past EVENT_RETENTION purged"),
                    Err(e) => tracing::warn!(error = %e, "purging change events failed"),
                }
            }
        });
        let (stop, handle) = jsonrpsee::server::stop_channel();
        tokio::spawn(serve::accept_loop(self.listener, self.builder, self.methods.into(), stop, self.socket_limits));
        handle
    }
}

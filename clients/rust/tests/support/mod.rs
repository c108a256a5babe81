//! The real service, started in-process for a test, on a fresh temp-file SQLite database: the
//! minimal part of the service's own `tests/api/helpers.rs`.

use std::net::SocketAddr;

use clap::Parser;
use jsonrpsee::server::ServerHandle;
use opportunity_service::Application;
use opportunity_service::auth::{self, ALL_SCOPES, Claims};
use opportunity_service::config::Cli;
use secrecy::SecretString;
use tempfile::TempDir;
use uuid::Uuid;

/// The secret the test app checks tokens with (HS256 secrets need at least 32 bytes).
pub const SECRET: &str = "client-test-secret-of-at-least-32-bytes-long";

/// A running application with its own database.
pub struct TestApp {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    /// The caller of [`TestApp::token`].
    pub user: Uuid,
    /// The only workspace of [`TestApp::token`].
    pub workspace: Uuid,
    _dir: TempDir,
}

/// Starts the application on a fresh SQLite database.
pub async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let args =
        ["opportunity-service", "--listen-addr", "127.0.0.1:0", "--database-url", &url, "--auth-jwt-secret", SECRET];
    let settings = Cli::try_parse_from(args).expect("test settings parse").serve;
    let app = Application::build(&settings).await.expect("application builds");
    let addr = app.local_addr();
    let handle = app.start();
    TestApp { addr, handle, user: Uuid::new_v4(), workspace: Uuid::new_v4(), _dir: dir }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.handle.stop();
    }
}

impl TestApp {
    /// `http://addr/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// `ws://addr/`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// A token for the app's user in its one workspace, with every scope, valid for an hour.
    pub fn token(&self) -> String {
        let claims = Claims {
            sub: self.user.to_string(),
            workspaces: vec![self.workspace.to_string()],
            scope: Some(ALL_SCOPES.to_string()),
            exp: chrono::Utc::now().timestamp() + 3600,
            nbf: None,
            iat: None,
            iss: None,
            aud: None,
        };
        auth::mint(&SecretString::from(SECRET.to_string()), &claims).expect("token signs")
    }
}

/// A TCP forwarder in front of the app, whose connections a test can cut (to see a client
/// lose its WebSocket and open a new one).
pub struct Proxy {
    pub addr: SocketAddr,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().unwrap();
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (tasks, count) = (connections.clone(), accepted.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tasks.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Self { addr, connections, accepted, accept }
    }

    /// Closes every connection forwarded so far; new ones are still accepted.
    pub fn cut(&self) {
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// How many connections were accepted.
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

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

//! Starting the real application for a test: on a fresh temp-file SQLite database, or on a fresh
//! PostgreSQL database when `TEST_DATABASE_URL` names a server (each test gets its own database);
//! its tokens, and the raw HTTP and WebSocket calls a test makes to it.

use std::net::SocketAddr;
use std::sync::Once;
use std::time::Duration;

use clap::Parser;
use diesel::{Connection, RunQueryDsl};
use jsonrpsee::server::ServerHandle;
use jsonrpsee::ws_client::{HeaderMap, HeaderValue, WsClient, WsClientBuilder};
use opportunity_service::Application;
use opportunity_service::auth::{self, ALL_SCOPES, Claims};
use opportunity_service::config::{Cli, ServeArgs};
use opportunity_service::db::{Database, DatabaseUrl, PoolOptions};
use secrecy::SecretString;
use serde_json::{Value, json};
use tempfile::TempDir;
use uuid::Uuid;

use super::{SECRET, request};

static BANNER: Once = Once::new();

/// A database of its own for one test; dropped with the test.
pub struct TestDatabase {
    /// `sqlite://…` or `postgres://…`.
    pub url: String,
    _dir: TempDir,
    pg: Option<(String, String)>,
}

impl TestDatabase {
    /// A fresh database on the backend this run tests.
    pub fn new() -> Self {
        Self::with_options("")
    }

    /// A fresh database; on PostgreSQL created with `options` after `CREATE DATABASE name`
    /// (`TEMPLATE template0 LC_CTYPE 'C'`, say).
    pub fn with_options(options: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        match std::env::var("TEST_DATABASE_URL").ok().filter(|u| !u.is_empty()) {
            None => {
                BANNER.call_once(|| {
                    eprintln!("backend: SQLite (set TEST_DATABASE_URL=postgres://… to run this suite on PostgreSQL)")
                });
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                Self { url, _dir: dir, pg: None }
            }
            Some(admin) => {
                BANNER.call_once(|| eprintln!("backend: PostgreSQL ({admin})"));
                let name = format!("ops_test_{}", Uuid::new_v4().simple());
                let mut conn = diesel::PgConnection::establish(&admin).unwrap_or_else(|e| {
                    panic!("TEST_DATABASE_URL is set but PostgreSQL does not answer at {admin}: {e}")
                });
                diesel::sql_query(format!("CREATE DATABASE {name} {options}"))
                    .execute(&mut conn)
                    .expect("create test database");
                let base =
                    admin.rsplit_once('/').map(|(b, _)| b.to_string()).expect("TEST_DATABASE_URL names a database");
                let url = format!("{base}/{name}");
                Self { url, _dir: dir, pg: Some((admin, name)) }
            }
        }
    }

    /// A pool of its own on the same database, for checking what was stored.
    pub fn open(&self) -> Database {
        Database::connect(
            DatabaseUrl::parse(&self.url).unwrap(),
            PoolOptions { size: Some(2), timeout: Duration::from_secs(5) },
        )
        .expect("open test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.pg
            && let Ok(mut conn) = diesel::PgConnection::establish(admin)
        {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn);
        }
    }
}

/// Settings for a test app on `db`, as the command line would give them.
pub fn settings(db: &TestDatabase, extra: &[&str]) -> ServeArgs {
    let mut args = vec![
        "opportunity-service",
        "--listen-addr",
        "127.0.0.1:0",
        "--database-url",
        &db.url,
        "--auth-jwt-secret",
        SECRET,
    ];
    args.extend_from_slice(extra);
    Cli::try_parse_from(args).expect("test settings parse").serve
}

/// A running application with its own database.
pub struct TestApp {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    /// A pool of the test's own on the app's database, opened by the first [`TestApp::count`]
    /// (declared before `db`, so that it closes before the database is dropped).
    store: tokio::sync::OnceCell<Database>,
    pub db: TestDatabase,
    pub http: reqwest::Client,
    /// The caller of [`TestApp::token`].
    pub user: Uuid,
    /// The only workspace of [`TestApp::token`].
    pub workspace: Uuid,
}

/// Starts the application on a fresh database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts the application on a fresh database with extra command-line flags.
pub async fn spawn_app_with(extra: &[&str]) -> TestApp {
    spawn_app_on(TestDatabase::new(), extra).await
}

/// Starts the application on `db` with extra command-line flags.
pub async fn spawn_app_on(db: TestDatabase, extra: &[&str]) -> TestApp {
    let app = Application::build(&settings(&db, extra)).await.expect("application builds");
    let addr = app.local_addr();
    let handle = app.start();
    TestApp {
        addr,
        handle,
        db,
        http: reqwest::Client::new(),
        user: Uuid::new_v4(),
        workspace: Uuid::new_v4(),
        store: tokio::sync::OnceCell::new(),
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.handle.stop();
    }
}

/// Claims for `user` in `workspaces` with `scope`, valid for an hour.
pub fn claims(user: Uuid, workspaces: &[Uuid], scope: &str) -> Claims {
    Claims {
        sub: user.to_string(),
        workspaces: workspaces.iter().map(ToString::to_string).collect(),
        scope: Some(scope.to_string()),
        exp: chrono::Utc::now().timestamp() + 3600,
        nbf: None,
        iat: None,
        iss: None,
        aud: None,
    }
}

/// Signs claims with the test secret.
pub fn sign(claims: &Claims) -> String {
    auth::mint(&SecretString::from(SECRET.to_string()), claims).unwrap()
}

/// A token for `user` in `workspaces` with `scope` (say [`ALL_SCOPES`]), valid for an hour.
pub fn token_for(user: Uuid, workspaces: &[Uuid], scope: &str) -> String {
    sign(&claims(user, workspaces, scope))
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

    /// A token for the app's user in its one workspace, with every scope.
    pub fn token(&self) -> String {
        token_for(self.user, &[self.workspace], ALL_SCOPES)
    }

    /// `Bearer <token>`: the Authorization header of [`TestApp::token`].
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token())
    }

    /// POSTs a raw body with the given headers (no Authorization unless given); returns the
    /// status and the body (JSON when it parses, else a string).
    pub async fn post_raw(&self, body: impl Into<reqwest::Body>, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = self.http.post(self.url()).header("content-type", "application/json").body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// POSTs a JSON body with a bearer token.
    pub async fn post(&self, body: &Value, token: &str) -> (u16, Value) {
        let auth = format!("Bearer {token}");
        self.post_raw(body.to_string(), &[("authorization", &auth)]).await
    }

    /// Calls `opportunity.create` over HTTP with the app's token; returns the whole response.
    pub async fn create(&self, params: Value) -> Value {
        self.post(&request(json!(1), "opportunity.create", params), &self.token()).await.1
    }

    /// A WebSocket client with the given handshake headers.
    pub async fn ws(&self, headers: &[(&str, &str)]) -> WsClient {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        WsClientBuilder::default().set_headers(map).build(self.ws_url()).await.expect("websocket connects")
    }

    /// How many opportunities are stored (in `workspace`, or all).
    pub async fn count(&self, workspace: Option<Uuid>) -> i64 {
        // One pool for every count of a test (opening one runs the migrations check and starts
        // a writer).
        let db = self.store.get_or_init(|| async { self.db.open() }).await;
        db.run(move |conn| opportunity_service::db::opportunity::count(conn, workspace)).await.unwrap()
    }
}

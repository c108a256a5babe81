//! Starting the real application for a test: on a fresh temp-file SQLite database, or on a fresh
//! PostgreSQL database when `TEST_DATABASE_URL` names a server (each test gets its own database).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
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

/// The secret every test app checks tokens with (HS256 secrets need at least 32 bytes).
pub const SECRET: &str = "integration-test-secret-of-at-least-32-bytes";

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

/// The minimal valid params of `opportunity.create`.
/// The params of a minimal create, typed: a customer, `title` and `retrofit`.
pub fn new_opportunity(title: &str) -> opportunity_client::CreateOpportunity {
    opportunity_client::CreateOpportunity::new(Uuid::new_v4(), title, opportunity_client::PipelineType::Retrofit)
}

/// The §4 `data.code` and `data.reason` of a refused typed call, for one `assert_eq!`.
pub fn refusal(e: &opportunity_client::ClientError) -> (Option<i32>, Option<&str>, Option<&str>) {
    (e.code(), e.data_code(), e.reason())
}

pub fn valid_params() -> Value {
    json!({
        "customerId": "550e8400-e29b-41d4-a716-446655440000",
        "title": "Chiller retrofit, Building C",
        "pipelineType": "retrofit",
    })
}

/// A JSON-RPC request object.
pub fn request(id: Value, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

impl TestApp {
    /// The typed client (`clients/rust`) over HTTP, acting with [`TestApp::token`], each call
    /// made once (no retries, so that a test sees every answer). For the happy paths, where the
    /// values matter; the wire itself is asserted with [`call`] and the envelope helpers.
    pub fn client(&self) -> opportunity_client::Client {
        self.client_as(&self.token())
    }

    /// [`TestApp::client`] with another token.
    pub fn client_as(&self, token: &str) -> opportunity_client::Client {
        opportunity_client::Client::http(&self.url(), token)
            .expect("the client takes the app's URL")
            .with_retry(opportunity_client::RetryPolicy::none())
    }

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
        sign(&claims(self.user, &[self.workspace], ALL_SCOPES))
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

/// An `opportunity.create` POST to `addr` with a bearer token, ready for more headers.
pub fn create_request(
    http: &reqwest::Client,
    addr: SocketAddr,
    token: &str,
    params: &Value,
) -> reqwest::RequestBuilder {
    http.post(format!("http://{addr}/"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(request(json!(1), "opportunity.create", params.clone()).to_string())
}

/// Calls `opportunity.create` over a WebSocket client with the params object as it is.
pub async fn ws_create(client: &WsClient, params: &Value) -> Result<Value, jsonrpsee::core::ClientError> {
    use jsonrpsee::core::client::ClientT;
    let mut object = jsonrpsee::core::params::ObjectParams::new();
    for (k, v) in params.as_object().expect("params object") {
        object.insert(k, v).unwrap();
    }
    client.request("opportunity.create", object).await
}

/// A signal by the name `kill -NAME` takes.
pub fn signal_by_name(name: &str) -> rustix::process::Signal {
    use rustix::process::Signal;
    match name {
        "INT" => Signal::INT,
        "TERM" => Signal::TERM,
        "KILL" => Signal::KILL,
        "STOP" => Signal::STOP,
        "CONT" => Signal::CONT,
        other => panic!("the tests send no signal {other:?}"),
    }
}

/// Sends the signal `name` to the process `pid`: a system call, so that the tests need no
/// `kill` program (procps is not on a minimal Debian).
pub fn send_signal(pid: u32, name: &str) -> std::io::Result<()> {
    let pid = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw).expect("a process id is positive");
    rustix::process::kill_process(pid, signal_by_name(name)).map_err(std::io::Error::from)
}

/// The release or debug binary of this build, started as a process.
pub struct ServiceProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ServiceProcess {
    /// Starts `opportunity-service serve` on `database_url` with port 0 and waits for its
    /// "listening on" line.
    pub fn start(database_url: &str, envs: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_opportunity-service"));
        command.env("DATABASE_URL", database_url).env("AUTH_JWT_SECRET", SECRET).envs(envs.iter().copied());
        Self::spawn(command)
    }

    /// Starts a prepared command of the binary (on port 0 with info logs unless the command sets
    /// `LISTEN_ADDR` or `RUST_LOG`), and waits for its "listening on" line.
    pub fn spawn(mut command: Command) -> Self {
        use std::io::{BufRead, BufReader};
        // What the caller set wins; otherwise port 0 and info logs.
        let set = |command: &Command, name: &str| command.get_envs().any(|(k, _)| k == name);
        if !set(&command, "LISTEN_ADDR") {
            command.env("LISTEN_ADDR", "127.0.0.1:0");
        }
        if !set(&command, "RUST_LOG") {
            command.env("RUST_LOG", "info");
        }
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("binary starts");
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    // Text logs end the address with a space, JSON logs with a quote.
                    let addr: String =
                        rest.chars().take_while(|c| c.is_ascii_alphanumeric() || ".:[]".contains(*c)).collect();
                    let _ = tx.send(addr);
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr.parse().expect("address in the log"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the service did not log its address; log:\n{}", log.lock().unwrap());
            }
        };
        Self { child, addr, log }
    }

    /// Sends the signal `name` (`TERM`, `KILL`, …), as a system call.
    pub fn signal(&self, name: &str) {
        send_signal(self.child.id(), name).unwrap_or_else(|e| panic!("SIG{name} to the service: {e}"));
    }

    /// Waits for the exit, at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebSocket handshake sent by hand to `path` with extra header lines (each `Name: value`);
/// returns the HTTP status, the body the server sent with it (when it refused) and the stream.
pub async fn ws_handshake(addr: SocketAddr, path: &str, headers: &[&str]) -> (u16, Vec<u8>, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for line in headers {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let length = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok()).flatten()
            });
            let body_start = end + 4;
            if status == 101 || length.is_none_or(|n| buf.len() - body_start >= n) {
                let body = buf[body_start..].to_vec();
                return (status, body, stream);
            }
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            other => panic!("no complete handshake answer: {other:?}; got {:?}", String::from_utf8_lossy(&buf)),
        }
    }
}

// --- Calls and the envelope assertions the suites share ------------------------------------------

/// Calls `method` over HTTP with `token` (request id 1); returns the whole response.
pub async fn call(app: &TestApp, token: &str, method: &str, params: Value) -> Value {
    app.post(&request(json!(1), method, params), token).await.1
}

/// The result of a call that must succeed.
#[track_caller]
pub fn ok(response: &Value) -> &Value {
    assert!(response.get("error").is_none(), "expected a result: {response}");
    &response["result"]
}

/// Asserts an error answer with this `error.code` and `data.code` (and no result); returns
/// `error.data`.
#[track_caller]
pub fn err<'a>(response: &'a Value, code: i64, name: &str) -> &'a Value {
    assert!(response.get("result").is_none(), "expected {name}, got a result: {response}");
    assert_eq!(response["error"]["code"], code, "{response}");
    assert_eq!(response["error"]["data"]["code"], name, "{response}");
    &response["error"]["data"]
}

/// Asserts a -32602 BAD_REQUEST with a non-empty list of messages on each of `fields`.
#[track_caller]
pub fn field_errors(response: &Value, fields: &[&str]) {
    let data = err(response, -32602, "BAD_REQUEST");
    for field in fields {
        let messages = data["fieldErrors"][field].as_array();
        assert!(
            messages.is_some_and(|m| !m.is_empty() && m.iter().all(Value::is_string)),
            "messages on {field} expected: {response}"
        );
    }
}

/// Creates an opportunity from the valid params with `extra` fields over them; returns it.
pub async fn create(app: &TestApp, token: &str, extra: Value) -> Value {
    let mut params = valid_params();
    params.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    ok(&call(app, token, "opportunity.create", params).await).clone()
}

/// The id of an opportunity in an answer.
#[track_caller]
pub fn id(o: &Value) -> &str {
    o["id"].as_str().unwrap_or_else(|| panic!("an id expected: {o}"))
}

/// The code and data of a WebSocket call that must fail with a JSON-RPC error.
#[track_caller]
pub fn ws_error(result: Result<Value, jsonrpsee::core::ClientError>) -> (i32, Value) {
    match result {
        Err(jsonrpsee::core::ClientError::Call(e)) => {
            let data = e.data().map(|raw| serde_json::from_str(raw.get()).expect("error data is JSON"));
            (e.code(), data.unwrap_or(Value::Null))
        }
        other => panic!("expected a JSON-RPC error answer, got {other:?}"),
    }
}

/// A WebSocket call's outcome in the shape of an HTTP answer (`result` or `error`), so that the
/// same assertions judge both transports.
#[track_caller]
pub fn ws_envelope(result: Result<Value, jsonrpsee::core::ClientError>) -> Value {
    match result {
        Ok(result) => json!({ "result": result }),
        Err(jsonrpsee::core::ClientError::Call(e)) => json!({
            "error": {
                "code": e.code(),
                "message": e.message(),
                "data": e.data().map(|d| serde_json::from_str::<Value>(d.get()).unwrap()),
            }
        }),
        Err(other) => panic!("the WebSocket call failed below JSON-RPC: {other}"),
    }
}

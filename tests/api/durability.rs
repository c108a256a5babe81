//! Durability and retries (CONTRACT.md §1 SIGINT/SIGTERM, §5 Durability, §6 Retries without
//! duplicates): rows survive a restart and a `kill -9` right after their answer, a SIGTERM lets
//! the calls in flight finish and exits 0, and idempotency keys never make a second row.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use diesel::RunQueryDsl;
use futures_util::future::join_all;
use jsonrpsee::server::ServerHandle;
use jsonrpsee::ws_client::{HeaderMap, HeaderValue, WsClient, WsClientBuilder};
use opportunity_service::Application;
use opportunity_service::auth::ALL_SCOPES;
use opportunity_service::db::{DbConn, DbError};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::*;

// ---------------------------------------------------------------------------------------------
// Small tools of this file
// ---------------------------------------------------------------------------------------------

/// Valid params with a title of their own, so that rows can be told apart.
fn params_titled(title: &str) -> Value {
    let mut params = valid_params();
    params["title"] = json!(title);
    params
}

/// POSTs one `opportunity.create` to `addr`; a transport failure is returned as the error.
async fn try_create_at(
    http: &reqwest::Client,
    addr: SocketAddr,
    token: &str,
    params: &Value,
    headers: &[(&str, &str)],
) -> Result<(u16, Value), reqwest::Error> {
    let mut req = create_request(http, addr, token, params);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

/// POSTs one `opportunity.create` to `addr` and returns the JSON-RPC response object.
async fn create_at(
    http: &reqwest::Client,
    addr: SocketAddr,
    token: &str,
    params: &Value,
    headers: &[(&str, &str)],
) -> Value {
    try_create_at(http, addr, token, params, headers).await.expect("the service answers").1
}

/// `opportunity.create` over HTTP on a [`TestApp`] with the given token and extra headers.
async fn app_create(app: &TestApp, token: &str, params: &Value, headers: &[(&str, &str)]) -> Value {
    create_at(&app.http, app.addr, token, params, headers).await
}

/// A WebSocket client on `addr` with `token` in the handshake.
async fn ws_client(addr: SocketAddr, token: &str) -> WsClient {
    let mut map = HeaderMap::new();
    map.insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
    WsClientBuilder::default().set_headers(map).build(format!("ws://{addr}/")).await.expect("websocket connects")
}

/// A WebSocket create's outcome in the shape of an HTTP response object (`result` or `error`).
async fn ws_call(client: &WsClient, params: &Value) -> Value {
    ws_envelope(ws_create(client, params).await)
}

/// The id of a successful create.
fn ok_id(response: &Value) -> String {
    id(ok(response)).to_string()
}

/// Asserts a -32602 with a non-empty list of messages on `fieldErrors.idempotencyKey`.
fn assert_key_field_error(response: &Value, what: &str) {
    let data = err(response, -32602, "BAD_REQUEST");
    let messages = data["fieldErrors"]["idempotencyKey"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no fieldErrors.idempotencyKey in {response}"));
    assert!(!messages.is_empty() && messages.iter().all(|m| m.is_string()), "{what}: {response}");
}

/// Asserts a reuse of a key with other params: CONFLICT with reason `idempotency_key_reused`.
fn assert_key_reused(response: &Value) {
    let data = err(response, -32009, "CONFLICT");
    assert_eq!(data["reason"], "idempotency_key_reused", "{response}");
}

/// How many opportunities are stored (in `workspace`, or all).
async fn count_in(db: &TestDatabase, workspace: Option<Uuid>) -> i64 {
    db.open().run(move |conn| opportunity_service::db::opportunity::count(conn, workspace)).await.expect("count")
}

#[derive(diesel::QueryableByName)]
struct IdRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

/// The ids of every stored opportunity, lowercase.
async fn stored_ids(db: &TestDatabase) -> BTreeSet<String> {
    db.open()
        .run(|conn| {
            let rows = match conn {
                DbConn::Postgres(c) => diesel::sql_query("SELECT id::text AS id FROM opportunities").load::<IdRow>(c),
                DbConn::Sqlite(c) => diesel::sql_query("SELECT id FROM opportunities").load::<IdRow>(c),
            }
            .map_err(DbError::classify)?;
            Ok(rows.into_iter().map(|r| r.id.to_lowercase()).collect())
        })
        .await
        .expect("stored ids")
}

/// Builds and starts the application in this process on `db`.
async fn start_app(db: &TestDatabase) -> (SocketAddr, ServerHandle) {
    let app = Application::build(&settings(db, &[])).await.expect("application builds");
    let addr = app.local_addr();
    (addr, app.start())
}

/// Stops an in-process application and waits until it has stopped.
async fn stop_app(handle: ServerHandle) {
    handle.stop().expect("the server was running");
    handle.stopped().await;
}

/// Waits for the process to exit (blocking wait off the runtime), at most `timeout`.
async fn wait_exit(mut process: ServiceProcess, timeout: Duration) -> (Option<std::process::ExitStatus>, String) {
    tokio::task::spawn_blocking(move || {
        let status = process.wait(timeout);
        let log = process.log.lock().unwrap().clone();
        (status, log)
    })
    .await
    .unwrap()
}

/// The process's log so far, for failure messages.
fn log_of(process: &ServiceProcess) -> String {
    process.log.lock().unwrap().clone()
}

// ---------------------------------------------------------------------------------------------
// §5 Durability: restarts and kill -9
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn restart_in_process_keeps_rows_and_creates_still_work() {
    let db = TestDatabase::new();
    let http = reqwest::Client::new();
    let (user, workspace) = (Uuid::new_v4(), Uuid::new_v4());
    let token = token_for(user, &[workspace], ALL_SCOPES);

    let (addr, handle) = start_app(&db).await;
    let mut ids = BTreeSet::new();
    for i in 0..5 {
        let response = create_at(&http, addr, &token, &params_titled(&format!("before {i}")), &[]).await;
        ids.insert(ok_id(&response));
    }
    assert_eq!(ids.len(), 5, "five creates, five ids");
    stop_app(handle).await;

    let (addr, handle) = start_app(&db).await;
    assert_eq!(count_in(&db, Some(workspace)).await, 5);
    assert_eq!(stored_ids(&db).await, ids);
    let response = create_at(&http, addr, &token, &params_titled("after restart"), &[]).await;
    let new_id = ok_id(&response);
    assert!(!ids.contains(&new_id), "a new create gets a new id");
    assert_eq!(count_in(&db, Some(workspace)).await, 6);
    stop_app(handle).await;
}

#[tokio::test]
async fn restart_after_sigterm_keeps_rows_and_creates_still_work() {
    let db = TestDatabase::new();
    let http = reqwest::Client::new();
    let (user, workspace) = (Uuid::new_v4(), Uuid::new_v4());
    let token = token_for(user, &[workspace], ALL_SCOPES);

    let process = ServiceProcess::start(&db.url, &[]);
    let mut ids = BTreeSet::new();
    for i in 0..5 {
        let response = create_at(&http, process.addr, &token, &params_titled(&format!("before {i}")), &[]).await;
        ids.insert(ok_id(&response));
    }
    process.signal("TERM");
    let (status, log) = wait_exit(process, Duration::from_secs(15)).await;
    let status = status.unwrap_or_else(|| panic!("no exit after SIGTERM; log:\n{log}"));
    assert!(status.success(), "SIGTERM must exit 0, got {status}; log:\n{log}");

    let process = ServiceProcess::start(&db.url, &[]);
    assert_eq!(count_in(&db, Some(workspace)).await, 5, "{}", log_of(&process));
    assert_eq!(stored_ids(&db).await, ids);
    let response = create_at(&http, process.addr, &token, &params_titled("after restart"), &[]).await;
    let new_id = ok_id(&response);
    assert!(!ids.contains(&new_id));
    assert_eq!(count_in(&db, Some(workspace)).await, 6);
}

#[tokio::test]
async fn kill_9_right_after_the_answers_loses_no_answered_create() {
    use std::os::unix::process::ExitStatusExt;
    const N: usize = 20;
    let db = TestDatabase::new();
    let http = reqwest::Client::new();
    let token = token_for(Uuid::new_v4(), &[Uuid::new_v4()], ALL_SCOPES);
    let process = ServiceProcess::start(&db.url, &[]);

    // Half one after the other, half at once; the kill follows the last answer immediately.
    let mut answered = BTreeSet::new();
    for i in 0..N / 2 {
        let response = create_at(&http, process.addr, &token, &params_titled(&format!("sequential {i}")), &[]).await;
        answered.insert(ok_id(&response));
    }
    let params: Vec<Value> = (0..N / 2).map(|i| params_titled(&format!("concurrent {i}"))).collect();
    let responses = join_all(params.iter().map(|p| try_create_at(&http, process.addr, &token, p, &[]))).await;
    process.signal("KILL");
    for response in &responses {
        let (_, body) = response.as_ref().expect("answered before the kill");
        answered.insert(ok_id(body));
    }
    assert_eq!(answered.len(), N);

    let (status, log) = wait_exit(process, Duration::from_secs(15)).await;
    let status = status.expect("the killed process is gone");
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL; log:\n{log}");

    let stored = stored_ids(&db).await;
    let lost: Vec<&String> = answered.difference(&stored).collect();
    assert!(lost.is_empty(), "answered creates missing after kill -9: {lost:?}");
    assert_eq!(stored.len(), N, "nothing beyond what was answered");
}

// ---------------------------------------------------------------------------------------------
// §1 SIGINT/SIGTERM: stop accepting, finish in-flight calls, exit 0
// ---------------------------------------------------------------------------------------------

/// What happened to one create sent around the SIGTERM.
enum Outcome {
    /// Answered with a result carrying this id.
    Created(String),
    /// Failed below HTTP (refused, reset, closed): the call did not reach the service.
    Connection(String),
    /// Any other answer (a status and body that are not a successful create), described.
    WrongAnswer(String),
}

#[tokio::test]
async fn sigterm_with_creates_in_flight_finishes_them_and_exits_0() {
    const WORKERS: usize = 50;
    /// Each worker stops after this many creates, should the service never stop.
    const MAX_PER_WORKER: usize = 40;
    /// The SIGTERM goes out once this many creates are answered.
    const SIGNAL_AFTER: usize = 10;

    let db = TestDatabase::new();
    let process = ServiceProcess::start(&db.url, &[]);
    let addr = process.addr;
    let token = Arc::new(token_for(Uuid::new_v4(), &[Uuid::new_v4()], ALL_SCOPES));
    // A guard against hanging forever, not a timing requirement.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(tokio::sync::Notify::new());

    // Every worker keeps one create in flight until its first failure: around the SIGTERM about
    // fifty calls are running.
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (http, token, answered, enough) = (http.clone(), token.clone(), answered.clone(), enough.clone());
        workers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..MAX_PER_WORKER {
                let params = params_titled(&format!("in flight {w}.{i}"));
                let outcome = match try_create_at(&http, addr, &token, &params, &[]).await {
                    Ok((200, body)) if body["result"]["id"].is_string() && body.get("error").is_none() => {
                        Outcome::Created(body["result"]["id"].as_str().unwrap().to_lowercase())
                    }
                    Ok((status, body)) => Outcome::WrongAnswer(format!("HTTP {status}: {body}")),
                    Err(e) if e.is_timeout() => Outcome::WrongAnswer(format!("no answer at all: {e}")),
                    Err(e) => Outcome::Connection(format!("{e:?}")),
                };
                let failed = !matches!(outcome, Outcome::Created(_));
                if !failed && answered.fetch_add(1, Ordering::SeqCst) + 1 == SIGNAL_AFTER {
                    enough.notify_one();
                }
                outcomes.push(outcome);
                if failed {
                    break;
                }
            }
            outcomes
        }));
    }

    enough.notified().await;
    process.signal("TERM");
    let mut outcomes = Vec::new();
    for worker in workers {
        outcomes.extend(worker.await.unwrap());
    }
    let (status, log) = wait_exit(process, Duration::from_secs(15)).await;

    let created: BTreeSet<String> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Created(id) => Some(id.clone()),
            _ => None,
        })
        .collect();
    let wrong: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::WrongAnswer(what) => Some(what.as_str()),
            _ => None,
        })
        .collect();
    let connection: Vec<&str> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Connection(what) => Some(what.as_str()),
            _ => None,
        })
        .collect();
    eprintln!(
        "sigterm in flight: {} created, {} failed at connection level (first: {:?}), {} wrong",
        created.len(),
        connection.len(),
        connection.first(),
        wrong.len()
    );

    let status = status.unwrap_or_else(|| panic!("no exit after SIGTERM; log:\n{log}"));
    assert!(status.success(), "SIGTERM must exit 0, got {status}; log:\n{log}");
    assert!(
        wrong.is_empty(),
        "calls around SIGTERM must succeed or fail at connection level, not answer otherwise: {wrong:?}"
    );
    let stored = stored_ids(&db).await;
    let missing: Vec<&String> = created.difference(&stored).collect();
    let extra: Vec<&String> = stored.difference(&created).collect();
    assert!(missing.is_empty(), "answered but not stored: {missing:?}");
    assert!(extra.is_empty(), "stored but never answered (a call in flight was dropped): {extra:?}");
    assert_eq!(stored.len(), created.len());
}

#[tokio::test]
async fn sigint_exits_0_and_keeps_the_rows() {
    let db = TestDatabase::new();
    let http = reqwest::Client::new();
    let token = token_for(Uuid::new_v4(), &[Uuid::new_v4()], ALL_SCOPES);
    let process = ServiceProcess::start(&db.url, &[]);
    let id = ok_id(&create_at(&http, process.addr, &token, &valid_params(), &[]).await);
    process.signal("INT");
    let (status, log) = wait_exit(process, Duration::from_secs(15)).await;
    let status = status.unwrap_or_else(|| panic!("no exit after SIGINT; log:\n{log}"));
    assert!(status.success(), "SIGINT must exit 0, got {status}; log:\n{log}");
    assert_eq!(stored_ids(&db).await, BTreeSet::from([id]));
}

/// A SIGTERM right after the service said where it listens (no call made yet) is a SIGTERM all
/// the same: exit 0. Repeated, since a handler installed too late loses only part of the time.
#[tokio::test]
async fn sigterm_right_after_the_listening_line_exits_0() {
    let db = TestDatabase::new();
    for attempt in 0..10 {
        let process = ServiceProcess::start(&db.url, &[]);
        process.signal("TERM");
        let (status, log) = wait_exit(process, Duration::from_secs(15)).await;
        let status = status.unwrap_or_else(|| panic!("attempt {attempt}: no exit after SIGTERM; log:\n{log}"));
        assert!(status.success(), "attempt {attempt}: SIGTERM must exit 0, got {status}; log:\n{log}");
    }
}

// ---------------------------------------------------------------------------------------------
// §6 Retries without duplicates
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn http_header_key_replays_the_same_answer_and_writes_one_row() {
    let app = spawn_app().await;
    let token = app.token();
    let key = format!("retry-{}", Uuid::new_v4());
    let params = params_titled("retried over HTTP");

    let first = app_create(&app, &token, &params, &[("idempotency-key", &key)]).await;
    let again = app_create(&app, &token, &params, &[("idempotency-key", &key)]).await;
    let third = app_create(&app, &token, &params, &[("idempotency-key", &key)]).await;
    assert_eq!(ok(&again), ok(&first), "the stored answer again");
    assert_eq!(ok(&third), ok(&first));
    assert_eq!(app.count(Some(app.workspace)).await, 1);
    assert_eq!(stored_ids(&app.db).await, BTreeSet::from([ok_id(&first)]));
}

#[tokio::test]
async fn params_field_key_replays_the_same_answer_over_websocket() {
    let app = spawn_app().await;
    let client = ws_client(app.addr, &app.token()).await;
    let mut params = params_titled("retried over WebSocket");
    params["idempotencyKey"] = json!(format!("ws-{}", Uuid::new_v4()));

    let first = ws_call(&client, &params).await;
    let again = ws_call(&client, &params).await;
    assert_eq!(ok(&again), ok(&first));
    // A second connection is another attempt of the same caller: still the same answer.
    let other = ws_client(app.addr, &app.token()).await;
    let third = ws_call(&other, &params).await;
    assert_eq!(ok(&third), ok(&first));
    assert_eq!(app.count(Some(app.workspace)).await, 1);
    assert_eq!(stored_ids(&app.db).await, BTreeSet::from([ok_id(&first)]));
}

#[tokio::test]
async fn params_field_key_over_http_and_header_key_are_one_key() {
    let app = spawn_app().await;
    let token = app.token();
    let key = format!("either-{}", Uuid::new_v4());
    let params = params_titled("one key, two ways");
    let mut with_field = params.clone();
    with_field["idempotencyKey"] = json!(key);

    let by_header = app_create(&app, &token, &params, &[("idempotency-key", &key)]).await;
    let by_field = app_create(&app, &token, &with_field, &[]).await;
    let client = ws_client(app.addr, &token).await;
    let by_ws = ws_call(&client, &with_field).await;
    assert_eq!(ok(&by_field), ok(&by_header));
    assert_eq!(ok(&by_ws), ok(&by_header));
    assert_eq!(app.count(Some(app.workspace)).await, 1);
}

#[tokio::test]
async fn same_key_with_other_params_is_a_conflict_and_writes_nothing() {
    let app = spawn_app().await;
    let token = app.token();
    let key = format!("reuse-{}", Uuid::new_v4());
    let params = params_titled("the first call");
    let first = app_create(&app, &token, &params, &[("idempotency-key", &key)]).await;
    let first_id = ok_id(&first);

    // Over HTTP: another title, another stage, another value.
    let mut variants = vec![params_titled("another title")];
    let mut v = params.clone();
    v["stage"] = json!("qualified");
    variants.push(v);
    let mut v = params.clone();
    v["estimatedValue"] = json!(10);
    variants.push(v);
    for variant in &variants {
        let response = app_create(&app, &token, variant, &[("idempotency-key", &key)]).await;
        assert_key_reused(&response);
    }

    // Over WebSocket with the params field.
    let client = ws_client(app.addr, &token).await;
    let mut variant = params_titled("another title on WebSocket");
    variant["idempotencyKey"] = json!(key);
    assert_key_reused(&ws_call(&client, &variant).await);

    assert_eq!(app.count(None).await, 1, "nothing new written");
    assert_eq!(stored_ids(&app.db).await, BTreeSet::from([first_id]));
    // The key still replays its first answer.
    let again = app_create(&app, &token, &params, &[("idempotency-key", &key)]).await;
    assert_eq!(ok(&again), ok(&first));
}

#[tokio::test]
async fn header_and_field_that_differ_are_a_field_error() {
    let app = spawn_app().await;
    let token = app.token();
    let mut params = valid_params();
    params["idempotencyKey"] = json!("key-in-the-field");
    let response = app_create(&app, &token, &params, &[("idempotency-key", "key-in-the-header")]).await;
    assert_key_field_error(&response, "header and field differ");
    assert_eq!(app.count(None).await, 0);
}

#[tokio::test]
async fn header_and_field_that_agree_are_one_key() {
    let app = spawn_app().await;
    let token = app.token();
    let key = format!("agree-{}", Uuid::new_v4());
    let mut params = params_titled("header and field agree");
    params["idempotencyKey"] = json!(key);
    let both = app_create(&app, &token, &params, &[("idempotency-key", &key)]).await;
    let id = ok_id(&both);
    // The same key by the header alone replays it.
    let header_only =
        app_create(&app, &token, &params_titled("header and field agree"), &[("idempotency-key", &key)]).await;
    assert_eq!(ok(&header_only), ok(&both));
    assert_eq!(stored_ids(&app.db).await, BTreeSet::from([id]));
}

#[tokio::test]
async fn invalid_keys_are_field_errors_and_write_nothing() {
    let app = spawn_app().await;
    let token = app.token();
    let long = "k".repeat(256);

    // In the params field (HTTP and WebSocket).
    let bad_fields = [
        ("empty", json!("")),
        ("256 characters", json!(long)),
        ("non-ASCII", json!("clé")),
        ("NUL", json!("key\u{0}")),
        ("newline", json!("key\nline")),
        ("tab", json!("key\tkey")),
        ("DEL", json!("key\u{7f}")),
        ("a number", json!(42)),
    ];
    let client = ws_client(app.addr, &token).await;
    for (what, key) in &bad_fields {
        let mut params = valid_params();
        params["idempotencyKey"] = key.clone();
        let response = app_create(&app, &token, &params, &[]).await;
        assert_key_field_error(&response, &format!("field {what} over HTTP"));
        let response = ws_call(&client, &params).await;
        assert_key_field_error(&response, &format!("field {what} over WebSocket"));
    }

    // In the header.
    let bad_headers = [
        ("empty", String::new()),
        ("256 characters", long.clone()),
        ("non-ASCII", "clé".to_string()),
        ("tab", "key\tkey".to_string()),
    ];
    for (what, key) in &bad_headers {
        let response = app_create(&app, &token, &valid_params(), &[("idempotency-key", key)]).await;
        assert_key_field_error(&response, &format!("header {what}"));
    }
    assert_eq!(app.count(None).await, 0, "no invalid key created anything");

    // The bounds themselves are keys: 1 and 255 printable characters, space and tilde included.
    for key in ["k".to_string(), "k".repeat(255), " ~!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}".to_string()] {
        let mut params = params_titled(&format!("valid key of {} characters", key.len()));
        params["idempotencyKey"] = json!(key);
        let first = app_create(&app, &token, &params, &[]).await;
        let again = app_create(&app, &token, &params, &[]).await;
        assert_eq!(ok(&again), ok(&first), "key {key:?}");
    }
    assert_eq!(app.count(None).await, 3);
}

#[tokio::test]
async fn keys_are_scoped_to_the_workspace() {
    let app = spawn_app().await;
    let (w1, w2) = (Uuid::new_v4(), Uuid::new_v4());
    let token = token_for(app.user, &[w1, w2], ALL_SCOPES);
    let key = format!("scoped-{}", Uuid::new_v4());
    let in_workspace = |ws: Uuid| {
        let mut params = params_titled("one key, two workspaces");
        params["workspaceId"] = json!(ws);
        params["idempotencyKey"] = json!(key);
        params
    };

    let one = app_create(&app, &token, &in_workspace(w1), &[]).await;
    let two = app_create(&app, &token, &in_workspace(w2), &[]).await;
    assert_eq!(ok(&one)["workspaceId"], json!(w1.to_string()));
    assert_eq!(ok(&two)["workspaceId"], json!(w2.to_string()));
    assert_ne!(ok_id(&one), ok_id(&two), "two workspaces, two rows");
    assert_eq!(app.count(Some(w1)).await, 1);
    assert_eq!(app.count(Some(w2)).await, 1);

    // Each workspace replays its own answer.
    let again_one = app_create(&app, &token, &in_workspace(w1), &[]).await;
    let again_two = app_create(&app, &token, &in_workspace(w2), &[]).await;
    assert_eq!(ok(&again_one), ok(&one));
    assert_eq!(ok(&again_two), ok(&two));
    assert_eq!(app.count(None).await, 2);
}

#[tokio::test]
async fn without_a_key_each_call_creates_a_row() {
    let app = spawn_app().await;
    let token = app.token();
    let params = valid_params();
    let mut ids = BTreeSet::new();
    for _ in 0..3 {
        ids.insert(ok_id(&app_create(&app, &token, &params, &[]).await));
    }
    let client = ws_client(app.addr, &token).await;
    for _ in 0..2 {
        ids.insert(ok_id(&ws_call(&client, &params).await));
    }
    assert_eq!(ids.len(), 5, "five calls, five ids");
    assert_eq!(stored_ids(&app.db).await, ids);
}

#[tokio::test]
async fn a_key_survives_a_restart() {
    let db = TestDatabase::new();
    let http = reqwest::Client::new();
    let (user, workspace) = (Uuid::new_v4(), Uuid::new_v4());
    let token = token_for(user, &[workspace], ALL_SCOPES);
    let key = format!("restart-{}", Uuid::new_v4());
    let params = params_titled("kept across a restart");

    let (addr, handle) = start_app(&db).await;
    let first = create_at(&http, addr, &token, &params, &[("idempotency-key", &key)]).await;
    let id = ok_id(&first);
    stop_app(handle).await;

    let (addr, handle) = start_app(&db).await;
    let replay = create_at(&http, addr, &token, &params, &[("idempotency-key", &key)]).await;
    assert_eq!(ok(&replay), ok(&first), "the same answer after a restart");
    let reuse =
        create_at(&http, addr, &token, &params_titled("other params after a restart"), &[("idempotency-key", &key)])
            .await;
    assert_key_reused(&reuse);
    assert_eq!(count_in(&db, Some(workspace)).await, 1);
    assert_eq!(stored_ids(&db).await, BTreeSet::from([id]));
    stop_app(handle).await;
}

#[tokio::test]
async fn concurrent_calls_with_one_key_never_make_two_rows() {
    const ROUNDS: usize = 10;
    const CALLS: usize = 20;
    let app = spawn_app().await;
    let token = app.token();
    let mut stored = BTreeSet::new();

    for round in 0..ROUNDS {
        let key = format!("race-{round}-{}", Uuid::new_v4());
        let params = params_titled(&format!("raced {round}"));
        let headers = [("idempotency-key", key.as_str())];
        let responses = join_all((0..CALLS).map(|_| app_create(&app, &token, &params, &headers))).await;

        let mut results = Vec::new();
        for response in &responses {
            if response.get("result").is_some() {
                results.push(ok(response).clone());
            } else {
                let data = err(response, -32009, "CONFLICT");
                assert_eq!(
                    data["retryable"],
                    json!(true),
                    "round {round}: a conflict while the first call runs must be retryable: {response}"
                );
            }
        }
        assert!(!results.is_empty(), "round {round}: no call succeeded: {responses:?}");
        assert!(
            results.iter().all(|r| *r == results[0]),
            "round {round}: every success is the same answer: {results:?}"
        );
        stored.insert(results[0]["id"].as_str().unwrap().to_string());
        assert_eq!(app.count(Some(app.workspace)).await, (round + 1) as i64, "round {round}: exactly one row per key");

        // Afterwards the key replays that one answer.
        let replay = app_create(&app, &token, &params, &headers).await;
        assert_eq!(ok(&replay), &results[0], "round {round}");
    }
    assert_eq!(stored_ids(&app.db).await, stored);
}

#[tokio::test]
async fn concurrent_calls_with_one_key_over_both_transports_never_make_two_rows() {
    const ROUNDS: usize = 5;
    const CALLS_EACH: usize = 10;
    let app = spawn_app().await;
    let token = app.token();
    let clients = [ws_client(app.addr, &token).await, ws_client(app.addr, &token).await];

    for round in 0..ROUNDS {
        let key = format!("mixed-{round}-{}", Uuid::new_v4());
        let params = params_titled(&format!("raced on both transports {round}"));
        let mut with_field = params.clone();
        with_field["idempotencyKey"] = json!(key);
        let headers = [("idempotency-key", key.as_str())];
        let over_http = join_all((0..CALLS_EACH).map(|_| app_create(&app, &token, &params, &headers)));
        let over_ws = join_all((0..CALLS_EACH).map(|i| ws_call(&clients[i % 2], &with_field)));
        let (mut responses, ws_responses) = tokio::join!(over_http, over_ws);
        responses.extend(ws_responses);

        let mut ids = BTreeSet::new();
        for response in &responses {
            if response.get("result").is_some() {
                ids.insert(ok_id(response));
            } else {
                let data = err(response, -32009, "CONFLICT");
                assert_eq!(data["retryable"], json!(true), "round {round}: {response}");
            }
        }
        assert_eq!(ids.len(), 1, "round {round}: one id for one key: {responses:?}");
        assert_eq!(app.count(Some(app.workspace)).await, (round + 1) as i64, "round {round}");
    }
}

#[tokio::test]
async fn idempotency_key_on_the_websocket_handshake_does_not_apply_to_every_call() {
    let app = spawn_app().await;
    let auth = format!("Bearer {}", app.token());
    let client = app.ws(&[("authorization", &auth), ("idempotency-key", "handshake-key")]).await;
    let first = ws_call(&client, &params_titled("first")).await;
    let second = ws_call(&client, &params_titled("second")).await;
    assert_ne!(ok_id(&first), ok_id(&second), "two calls on one socket are two creates: {first} {second}");
    assert_eq!(app.count(None).await, 2);
}

#[tokio::test]
async fn a_retry_that_differs_only_in_form_is_a_replay() {
    let app = spawn_app().await;
    let token = app.token();
    let key = format!("retry-{}", Uuid::new_v4());
    let params = params_titled("same request, other spelling");
    let first = app_create(&app, &token, &params, &[("idempotency-key", &key)]).await;
    // Defaults spelled out, the title padded, the UUID upper-case, the workspace named: the
    // same opportunity is asked for.
    let mut spelled = params.clone();
    spelled["stage"] = json!("lead");
    spelled["budgetConfirmed"] = json!(false);
    spelled["visibilityMode"] = json!("workspace_local");
    spelled["title"] = json!(format!("  {}  ", params["title"].as_str().unwrap()));
    spelled["customerId"] = json!(params["customerId"].as_str().unwrap().to_uppercase());
    spelled["workspaceId"] = json!(app.workspace.to_string());
    spelled["ownerUserId"] = json!(app.user.to_string());
    let again = app_create(&app, &token, &spelled, &[("idempotency-key", &key)]).await;
    assert_eq!(ok(&again), ok(&first), "{again}");
    assert_eq!(app.count(None).await, 1);
}

//! Hostile clients (issue 4, item 3): slow and stalled connections, idle WebSocket peers,
//! connections abandoned mid-request, and bodies built to hurt a parser (deep nesting, huge
//! documents, huge numbers, invalid UTF-8, NUL bytes, lone surrogates, duplicate keys).
//!
//! Each test checks what a caller would notice: the hostile connection is cut off in bounded
//! time or refused in the shape of CONTRACT.md §4, nothing is written, and the service keeps
//! answering `/health` and valid creates meanwhile and afterwards. The connection limit, oversized
//! bodies and batches are in `transport.rs`.
//!
//! Tests that measure time run on a multi-threaded runtime: the application runs on the test's
//! runtime, and a real server has more than one worker.

use std::time::{Duration, Instant};

use opportunity_service::auth::ALL_SCOPES;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::helpers::*;

const CREATE: &str = "opportunity.create";

/// How long a hostile connection may outlive `--request-timeout 1s` (or two missed pings at
/// `--ws-ping-interval 1s`) before the test calls it held forever.
const CUT_OFF_WITHIN: Duration = Duration::from_secs(6);

/// How long a refusal of a hostile body may take, even near the body limit in a debug build.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Helpers of this file
// ---------------------------------------------------------------------------------------------

/// Asserts that `response` is one JSON-RPC error answer in §4's shape whose `error.code` is one
/// of `allowed`; for -32602 also the flattened `fieldErrors`/`formErrors`. Returns `error`.
#[track_caller]
fn assert_refused<'a>(response: &'a Value, what: &str, allowed: &[i64]) -> &'a Value {
    assert!(response.is_object(), "{what}: expected one JSON-RPC error object, got {response}");
    assert_eq!(response["jsonrpc"], "2.0", "{what}: {response}");
    assert!(response.get("result").is_none(), "{what}: refused, so no result: {response}");
    let error = &response["error"];
    let code = error["code"].as_i64().unwrap_or_else(|| panic!("{what}: error.code: {response}"));
    assert!(allowed.contains(&code), "{what}: error.code {code} is not one of {allowed:?}: {response}");
    assert!(error["message"].is_string(), "{what}: error.message: {response}");
    let name = error["data"]["code"].as_str().unwrap_or_else(|| panic!("{what}: error.data.code: {response}"));
    let status = error["data"]["httpStatus"].as_u64().unwrap_or_else(|| panic!("{what}: data.httpStatus: {response}"));
    assert!(
        contract_names(code).contains(&(name, status)),
        "{what}: error.code {code} with data.code {name:?} and httpStatus {status} is not a row of §4: {response}"
    );
    if code == -32602 {
        let field_errors = error["data"]["fieldErrors"]
            .as_object()
            .unwrap_or_else(|| panic!("{what}: data.fieldErrors is an object: {response}"));
        for (field, messages) in field_errors {
            let messages = messages.as_array().unwrap_or_else(|| panic!("{what}: fieldErrors.{field}: {response}"));
            assert!(
                !messages.is_empty() && messages.iter().all(|m| m.as_str().is_some_and(|s| !s.is_empty())),
                "{what}: fieldErrors.{field} is a list of messages: {response}"
            );
        }
        let form_errors =
            error["data"]["formErrors"].as_array().unwrap_or_else(|| panic!("{what}: data.formErrors: {response}"));
        assert!(form_errors.iter().all(Value::is_string), "{what}: formErrors are strings: {response}");
        assert!(
            !field_errors.is_empty() || !form_errors.is_empty(),
            "{what}: a validation error names at least one problem: {response}"
        );
    }
    error
}

/// Asserts a -32602 answer whose `fieldErrors` has `field`.
#[track_caller]
fn assert_field_error(response: &Value, what: &str, field: &str) {
    let error = assert_refused(response, what, &[-32602]);
    assert!(error["data"]["fieldErrors"][field].is_array(), "{what}: expected fieldErrors.{field}: {response}");
}

/// Asserts a -32602 answer with a `formErrors` entry that contains every one of `words`.
#[track_caller]
fn assert_form_error(response: &Value, what: &str, words: &[&str]) {
    let error = assert_refused(response, what, &[-32602]);
    let found = error["data"]["formErrors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|message| words.iter().all(|w| message.contains(w)));
    assert!(found, "{what}: expected a formErrors entry containing {words:?}: {response}");
}

/// The answer to a hostile body: its JSON when it came in time with HTTP 200 (as every JSON-RPC
/// error but 408 and 413, README: behaviour the contract leaves open), else what went wrong.
type Answer = Result<Value, String>;

/// POSTs raw bytes with the app's token, waiting at most [`ANSWER_WITHIN`].
async fn send(app: &TestApp, body: impl Into<Vec<u8>>) -> Answer {
    post_within(&app.http, &app.url(), &app.bearer(), body.into()).await
}

/// POSTs raw bytes with an Authorization header, waiting at most [`ANSWER_WITHIN`].
async fn post_within(http: &reqwest::Client, url: &str, auth: &str, body: Vec<u8>) -> Answer {
    let started = Instant::now();
    let request = http.post(url).header("content-type", "application/json").header("authorization", auth).body(body);
    let response = match tokio::time::timeout(ANSWER_WITHIN, async {
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok::<_, reqwest::Error>((status, response.text().await?))
    })
    .await
    {
        Err(_) => return Err(format!("no answer within {ANSWER_WITHIN:?}")),
        Ok(Err(e)) => return Err(format!("the request failed: {e}")),
        Ok(Ok(response)) => response,
    };
    let (status, text) = response;
    let body = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
    if started.elapsed() >= ANSWER_WITHIN {
        return Err(format!("the answer took {:?} (at most {ANSWER_WITHIN:?})", started.elapsed()));
    }
    if status != 200 {
        return Err(format!("HTTP {status} (JSON-RPC errors travel with HTTP 200): {body}"));
    }
    Ok(body)
}

/// The JSON of an answer that came in time with HTTP 200.
#[track_caller]
fn answered<'a>(answer: &'a Answer, what: &str) -> &'a Value {
    answer.as_ref().unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Collects the failed cases of a test that tries many, so that one run reports them all.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    /// Runs one case's assertions, recording a failure instead of stopping.
    fn check(&mut self, case: impl FnOnce()) {
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(case)) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(ToString::to_string))
                .unwrap_or_else(|| "a case panicked".into());
            self.0.push(message);
        }
    }

    #[track_caller]
    fn finish(self) {
        assert!(self.0.is_empty(), "{} case(s) failed:\n- {}", self.0.len(), self.0.join("\n- "));
    }
}

/// Asserts a §4 error answer, or (for a body that is a JSON array, a batch) an array of them.
#[track_caller]
fn assert_refused_one_or_batch(response: &Value, what: &str, allowed: &[i64]) {
    match response.as_array() {
        Some(items) => {
            assert!(!items.is_empty(), "{what}: an empty answer array: {response}");
            for item in items {
                assert_refused(item, what, allowed);
            }
        }
        None => {
            assert_refused(response, what, allowed);
        }
    }
}

/// A create body with `params` written as raw JSON text.
fn create_with_params_text(params: &str) -> Vec<u8> {
    format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{CREATE}","params":{params}}}"#).into_bytes()
}

/// The valid params with one member set to raw JSON text (for values `serde_json::json!`
/// cannot hold: huge numbers, lone surrogates, invalid bytes); a member of that name in the
/// valid params is replaced.
fn params_with_raw(field: &str, raw: &[u8]) -> Vec<u8> {
    let mut params = valid_params();
    params.as_object_mut().unwrap().remove(field);
    append_raw(params.to_string().into_bytes(), field, raw)
}

/// The valid params with one more member written as raw JSON text, after any of the same name.
fn params_with_extra_raw(field: &str, raw: &[u8]) -> Vec<u8> {
    append_raw(valid_params().to_string().into_bytes(), field, raw)
}

/// Appends a member to the JSON text of an object.
fn append_raw(mut params: Vec<u8>, field: &str, raw: &[u8]) -> Vec<u8> {
    params.pop(); // the closing brace
    params.extend_from_slice(format!(r#","{field}":"#).as_bytes());
    params.extend_from_slice(raw);
    params.push(b'}');
    params
}

/// A create body whose params hold one extra member written as raw bytes.
fn create_with_raw(field: &str, raw: &[u8]) -> Vec<u8> {
    let mut body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{CREATE}","params":"#).into_bytes();
    body.extend_from_slice(&params_with_raw(field, raw));
    body.push(b'}');
    body
}

/// Asserts that the service still answers `/health` and a valid create, and that nothing but
/// that create was stored: `stored_before` opportunities before it.
async fn assert_still_serving(app: &TestApp, stored_before: i64) {
    assert_eq!(app.count(None).await, stored_before, "refused calls write nothing");
    let health = tokio::time::timeout(Duration::from_secs(5), app.http.get(format!("{}health", app.url())).send())
        .await
        .expect("GET /health answers within 5 s")
        .expect("GET /health is answered");
    assert_eq!(health.status().as_u16(), 200, "GET /health");
    let response = tokio::time::timeout(Duration::from_secs(10), app.create(valid_params()))
        .await
        .expect("a valid create answers within 10 s");
    assert_created(&response, &json!(1), "a valid create");
    assert_eq!(app.count(None).await, stored_before + 1, "the valid create is stored");
}

/// What became of a raw HTTP connection.
#[derive(Debug)]
enum Outcome {
    /// An HTTP response arrived (its status and as much of the body as it declared).
    Response { status: u16, body: Vec<u8> },
    /// The server closed the connection (EOF or reset) without a response.
    Closed,
}

/// The first line and headers of an HTTP response in `buf`, when complete: (status, header
/// block length, Content-Length).
fn parse_head(buf: &[u8]) -> Option<(u16, usize, Option<usize>)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]);
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok()).flatten()
    });
    Some((status, end, length))
}

/// Reads until an HTTP response is complete or the server closes; `None` when neither happened
/// within `within`.
async fn response_or_close<R: AsyncRead + Unpin>(reader: &mut R, within: Duration) -> Option<Outcome> {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((status, head_len, length)) = parse_head(&buf) {
            let body = &buf[head_len..];
            if length.is_none_or(|n| body.len() >= n) {
                return Some(Outcome::Response { status, body: body.to_vec() });
            }
        }
        match tokio::time::timeout_at(deadline, reader.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Some(match parse_head(&buf) {
                    Some((status, head_len, _)) => Outcome::Response { status, body: buf[head_len..].to_vec() },
                    None => Outcome::Closed,
                });
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads and discards until the server closes the connection (EOF or reset); returns the bytes
/// drained, or `None` when the connection is still open after `within`.
async fn drain_until_closed<R: AsyncRead + Unpin>(reader: &mut R, within: Duration) -> Option<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + within;
    let mut drained = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, reader.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(drained),
            Ok(Ok(n)) => drained.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The head of a create POST with the app's token and the given Content-Length.
fn post_head(app: &TestApp, content_length: usize) -> String {
    format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAuthorization: {}\r\nContent-Length: {content_length}\r\n\r\n",
        app.addr,
        app.bearer()
    )
}

/// Asserts that a cut-off connection either got HTTP 408 with a JSON-RPC error in §4's shape,
/// or was closed.
#[track_caller]
fn assert_cut_off(outcome: Option<Outcome>, elapsed: Duration, what: &str) {
    match outcome {
        None => panic!("{what}: the connection is still open after {elapsed:?}; it holds its resources forever"),
        Some(Outcome::Closed) => {}
        Some(Outcome::Response { status, body }) => {
            assert_eq!(status, 408, "{what}: expected HTTP 408, got {status}: {}", String::from_utf8_lossy(&body));
            let response: Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
                panic!("{what}: the 408 body is a JSON-RPC error: {}", String::from_utf8_lossy(&body))
            });
            assert_refused(&response, what, &[-32600, -32700]);
        }
    }
    assert!(elapsed < CUT_OFF_WITHIN, "{what}: cut off only after {elapsed:?} (at most {CUT_OFF_WITHIN:?})");
}

/// While a hostile connection is held: other callers get `/health` and creates promptly.
async fn assert_others_served_promptly(app: &TestApp, what: &str) {
    let started = Instant::now();
    let health = app.http.get(format!("{}health", app.url())).send().await.expect("GET /health");
    assert_eq!(health.status().as_u16(), 200, "{what}: GET /health meanwhile");
    assert_created(&app.create(valid_params()).await, &json!(1), "a valid create");
    assert!(started.elapsed() < Duration::from_secs(2), "{what}: others waited {:?}", started.elapsed());
}

/// A client has stalled on `stream` since `started`: other callers are served meanwhile, and the
/// stalled connection is cut off within [`CUT_OFF_WITHIN`].
async fn assert_stall_is_cut_off<R: AsyncRead + Unpin>(app: &TestApp, stream: &mut R, started: Instant, what: &str) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_others_served_promptly(app, &format!("while {what}")).await;
    let outcome = response_or_close(stream, CUT_OFF_WITHIN).await;
    assert_cut_off(outcome, started.elapsed(), what);
}

// ---------------------------------------------------------------------------------------------
// Slow and stalled HTTP clients
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_trickled_slower_than_request_timeout_is_cut_off() {
    let app = spawn_app_with(&["--request-timeout", "1s"]).await;
    // A valid create, so that a server that waited for all of it would store it.
    let body = request(json!(1), CREATE, valid_params()).to_string();
    let (mut reader, mut writer) = TcpStream::connect(app.addr).await.unwrap().into_split();
    writer.write_all(post_head(&app, body.len()).as_bytes()).await.unwrap();
    let started = Instant::now();
    // One byte every 250 ms: the whole body would take half a minute.
    let trickle = tokio::spawn(async move {
        for byte in body.into_bytes() {
            if writer.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        writer
    });
    assert_stall_is_cut_off(&app, &mut reader, started, "a body trickles in at 4 bytes/s, --request-timeout 1s").await;
    trickle.abort();
    assert_still_serving(&app, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_sends_headers_and_no_body_is_cut_off() {
    let app = spawn_app_with(&["--request-timeout", "1s"]).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(post_head(&app, 200).as_bytes()).await.unwrap();
    let started = Instant::now();
    let what = "a client stalls after headers with Content-Length 200, --request-timeout 1s";
    assert_stall_is_cut_off(&app, &mut stream, started, what).await;
    assert_still_serving(&app, 1).await;
}

/// Slowloris: a request line and half the headers, then nothing. `REQUEST_TIMEOUT` is the only
/// setting a deployer has for slow clients, so the headers must arrive within it too (with a
/// few seconds' slack), not only the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_stalls_inside_its_headers_is_cut_off() {
    let app = spawn_app_with(&["--request-timeout", "1s"]).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!("POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAuthor", app.addr);
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let what = "a client stalls inside its request head, --request-timeout 1s";
    assert_stall_is_cut_off(&app, &mut stream, started, what).await;
    assert_still_serving(&app, 1).await;
}

/// The same on a kept-alive connection: one call answered, then half the head of the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_connection_that_stalls_inside_its_next_headers_is_cut_off() {
    let app = spawn_app_with(&["--request-timeout", "1s"]).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let body = request(json!(1), CREATE, valid_params()).to_string();
    stream.write_all(post_head(&app, body.len()).as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    match response_or_close(&mut stream, Duration::from_secs(10)).await {
        Some(Outcome::Response { status: 200, body }) => {
            assert_created(&serde_json::from_slice(&body).expect("a JSON answer"), &json!(1), "a valid create");
        }
        other => panic!("the first call on the connection is answered: {other:?}"),
    }
    let head = format!("POST / HTTP/1.1\r\nHost: {}\r\nContent-Ty", app.addr);
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let what = "a kept-alive client stalls inside its next request head";
    assert_stall_is_cut_off(&app, &mut stream, started, what).await;
    assert_still_serving(&app, 2).await;
}

/// Slowloris beyond what the process can hold: with a file-descriptor limit a little above what
/// the service uses idle, 150 connections stall inside their request heads. Stalled connections
/// must be closed by the timeouts, so that a new caller gets in again within seconds; else the
/// accept loop fails (EMFILE) for as long as the attacker holds on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_beyond_the_file_descriptor_limit_does_not_lock_callers_out() {
    let db = TestDatabase::new();
    let service = ServiceProcess::start(&db.url, &[("REQUEST_TIMEOUT", "1s")]);
    let pid = service.child.id();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("/proc/PID/fd").count();
    let limit = open + 48;
    // prlimit(2) on the service, as a system call (no `prlimit` program needed).
    let limit_u64 = limit as u64;
    let rlimit = rustix::process::Rlimit { current: Some(limit_u64), maximum: Some(limit_u64) };
    let target = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw).expect("a process id");
    rustix::process::prlimit(Some(target), rustix::process::Resource::Nofile, rlimit)
        .unwrap_or_else(|e| panic!("prlimit --nofile={limit} on the service: {e}"));

    let mut stalled = Vec::new();
    for _ in 0..150 {
        let mut stream = TcpStream::connect(service.addr).await.expect("the kernel completes the handshake");
        stream.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/js").await.unwrap();
        stalled.push(stream);
    }
    let started = Instant::now();
    let health = tokio::time::timeout(
        Duration::from_secs(15),
        reqwest::Client::new().get(format!("http://{}/health", service.addr)).send(),
    )
    .await;
    let elapsed = started.elapsed();
    assert!(
        matches!(&health, Ok(Ok(r)) if r.status().as_u16() == 200),
        "GET /health behind 150 stalled connections (file descriptors: {limit}, REQUEST_TIMEOUT=1s): {health:?} after {elapsed:?}"
    );
    drop(stalled);
}

/// Calls whose bodies stall hold connection slots; `REQUEST_TIMEOUT` must give them back, so
/// that a later caller is served rather than refused with 429 for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_give_back_their_connection_slots() {
    let app = spawn_app_with(&["--request-timeout", "1s", "--max-connections", "4"]).await;
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(post_head(&app, 500).as_bytes()).await.unwrap();
        stream.write_all(b"{\"jsonrpc\":").await.unwrap();
        stalled.push(stream);
    }
    let started = Instant::now();
    let token = app.token();
    loop {
        let (status, response) = app.post(&request(json!(2), CREATE, valid_params()), &token).await;
        if status == 200 {
            assert_created(&response, &json!(2), "a valid create");
            break;
        }
        assert_eq!(status, 429, "a call beyond the limit is refused with 429: {response}");
        assert!(
            started.elapsed() < CUT_OFF_WITHIN,
            "four stalled bodies still hold every slot after {:?} with --request-timeout 1s",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stalled);
    assert_still_serving(&app, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_abandoned_mid_request_do_not_block_later_calls() {
    // A small limit, so that slots leaked by abandoned calls would show as 429.
    let app = spawn_app_with(&["--max-connections", "8"]).await;
    let body = request(json!(1), CREATE, valid_params()).to_string();
    let mut bad = valid_params();
    bad["title"] = json!("");
    let refused = request(json!(1), CREATE, bad).to_string();
    let ws_head = ws_handshake_head(&app);
    for round in 0..30 {
        let mut streams = Vec::new();
        for kind in 0..5 {
            let mut stream = TcpStream::connect(app.addr).await.unwrap();
            let sent: Vec<u8> = match kind {
                // Half a request head.
                0 => b"POST / HTTP/1.1\r\nHost: x\r\nContent-Le".to_vec(),
                // The head and half the body of a valid create.
                1 => [post_head(&app, body.len()).as_bytes(), &body.as_bytes()[..body.len() / 2]].concat(),
                // The head and the body of a refused create, leaving before the answer.
                2 => [post_head(&app, refused.len()).as_bytes(), refused.as_bytes()].concat(),
                // A WebSocket handshake, leaving before the answer.
                3 => ws_head.clone().into_bytes(),
                // A chunked body cut in the middle of a chunk.
                _ => format!(
                    "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: {}\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n{{\"jsonrpc\":\"2.0\"",
                    app.bearer()
                )
                .into_bytes(),
            };
            stream.write_all(&sent).await.unwrap();
            streams.push(stream);
        }
        if round % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Abandoned: closed without reading anything.
        drop(streams);
    }
    // The server notices the closed connections promptly; give it a moment at most.
    let started = Instant::now();
    let token = app.token();
    loop {
        let (status, response) = app.post(&request(json!(2), CREATE, valid_params()), &token).await;
        if status == 200 {
            assert_created(&response, &json!(2), "a valid create");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "150 abandoned connections still block calls after {:?}: HTTP {status} {response}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = app.count(None).await;
    assert_eq!(stored, 1, "abandoned and refused calls write nothing");
    assert_still_serving(&app, 1).await;
}

// ---------------------------------------------------------------------------------------------
// WebSocket peers
// ---------------------------------------------------------------------------------------------

fn ws_handshake_head(app: &TestApp) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: {}\r\n\r\n",
        app.addr,
        app.bearer()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_websocket_peer_that_never_answers_pings_is_disconnected() {
    let app = spawn_app_with(&["--ws-ping-interval", "1s"]).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(ws_handshake_head(&app).as_bytes()).await.unwrap();
    // Read the handshake answer and nothing more.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("the handshake is answered")
            .expect("the handshake answer is read");
        assert_eq!(n, 1, "the connection closed during the handshake: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "the WebSocket handshake succeeds: {head}");
    let started = Instant::now();

    // Never read, never answer a ping. The server pings every second and gives up after two
    // missed intervals.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_others_served_promptly(&app, "while a WebSocket peer ignores pings").await;
    let drained = drain_until_closed(&mut stream, CUT_OFF_WITHIN.saturating_sub(started.elapsed())).await;
    let elapsed = started.elapsed();
    match drained {
        None => panic!("a WebSocket peer that ignores pings is still connected after {elapsed:?}"),
        Some(frames) => {
            // Server frames are unmasked: 0x89 starts a ping.
            assert!(frames.contains(&0x89), "the server pinged the peer before it gave up: {frames:02x?}");
        }
    }
    assert!(elapsed < CUT_OFF_WITHIN, "the silent peer was dropped only after {elapsed:?}");
    assert_still_serving(&app, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_websocket_client_that_answers_pings_stays_connected() {
    let app = spawn_app_with(&["--ws-ping-interval", "1s"]).await;
    let client = app.ws(&[("authorization", &app.bearer())]).await;
    // Idle for several ping intervals, longer than the two a silent peer is given.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(client.is_connected(), "a client that answers pings is kept");
    let result = ws_create(&client, &valid_params()).await.expect("the idle connection still serves calls");
    assert_eq!(result["title"], "Chiller retrofit, Building C", "{result}");
    assert_eq!(app.count(None).await, 1);
}

// ---------------------------------------------------------------------------------------------
// Bodies built to hurt a parser
// ---------------------------------------------------------------------------------------------

fn nested(open: &str, close: &str, depth: usize, inner: &str) -> String {
    format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_json_is_refused_cleanly() {
    let app = spawn_app().await;
    let mut failures = Failures::default();
    let deep = 10_000;
    // The body itself: not a request at any depth. A body that is an array is a batch, answered
    // with one error per item.
    let bodies = [
        ("10,000 unclosed [", "[".repeat(deep)),
        ("10,000 nested arrays", nested("[", "]", deep, "")),
        ("10,000 nested objects", nested(r#"{"a":"#, "}", deep, "1")),
        ("a request in 10,000 arrays", nested("[", "]", deep, &request(json!(1), CREATE, valid_params()).to_string())),
        (
            "10,000 [ after a request's opening",
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{CREATE}","params":{}"#, "[".repeat(deep)),
        ),
    ];
    for (what, body) in bodies {
        let answer = send(&app, body).await;
        failures.check(|| assert_refused_one_or_batch(answered(&answer, what), what, &[-32700, -32600]));
    }
    // Inside a create: as params, and as the value of a field.
    let cases = [
        ("params of 10,000 nested arrays", create_with_params_text(&nested("[", "]", deep, ""))),
        ("params of 10,000 nested objects", create_with_params_text(&nested(r#"{"title":"#, "}", deep, "1"))),
        (
            "scopeSummary of 10,000 nested arrays",
            create_with_raw("scopeSummary", nested("[", "]", deep, "").as_bytes()),
        ),
        ("title of 10,000 nested objects", create_with_raw("title", nested(r#"{"a":"#, "}", deep, "null").as_bytes())),
        (
            "solutionFamilies of 10,000 nested arrays",
            create_with_raw("solutionFamilies", nested("[", "]", deep, "").as_bytes()),
        ),
    ];
    for (what, body) in cases {
        let answer = send(&app, body).await;
        failures.check(|| {
            assert_refused(answered(&answer, what), what, &[-32700, -32600, -32602]);
        });
    }
    // Nesting a JSON parser takes (100 levels) is a type error of the field, like any other.
    for (field, reported) in
        [("scopeSummary", "scopeSummary"), ("customerId", "customerId"), ("solutionFamilies", "solutionFamilies.0")]
    {
        let what = format!("{field} of 100 nested arrays");
        let answer = send(&app, create_with_raw(field, nested("[", "]", 100, "").as_bytes())).await;
        failures.check(|| assert_field_error(answered(&answer, &what), &what, reported));
    }
    let stored = app.count(None).await;
    failures.check(|| assert_eq!(stored, 0, "refused calls write nothing"));
    failures.finish();
    assert_still_serving(&app, 0).await;
}

/// The service as a process of its own (the test build's binary, on a fresh database), for
/// inputs that might keep it busy: the process is killed at the end of the test, so that a
/// service that chokes fails the test in bounded time without slowing the rest of the suite.
struct Process {
    service: ServiceProcess,
    db: TestDatabase,
    auth: String,
    http: reqwest::Client,
}

impl Process {
    fn start() -> Self {
        let db = TestDatabase::new();
        let service = ServiceProcess::start(&db.url, &[]);
        let token = sign(&claims(Uuid::new_v4(), &[Uuid::new_v4()], ALL_SCOPES));
        Self { service, db, auth: format!("Bearer {token}"), http: reqwest::Client::new() }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.service.addr)
    }

    async fn send(&self, body: impl Into<Vec<u8>>) -> Answer {
        post_within(&self.http, &self.url(), &self.auth, body.into()).await
    }

    async fn count(&self) -> i64 {
        let db = self.db.open();
        db.run(|conn| opportunity_service::db::opportunity::count(conn, None)).await.unwrap()
    }

    /// `/health` and a valid create are answered, and only that create is stored.
    async fn assert_still_serving(&self) {
        assert_eq!(self.count().await, 0, "refused calls write nothing");
        let health =
            tokio::time::timeout(Duration::from_secs(5), self.http.get(format!("{}health", self.url())).send())
                .await
                .expect("GET /health answers within 5 s")
                .expect("GET /health is answered");
        assert_eq!(health.status().as_u16(), 200, "GET /health");
        let body = request(json!(1), CREATE, valid_params()).to_string();
        let answer = self.send(body).await;
        assert_created(answered(&answer, "a valid create afterwards"), &json!(1), "a valid create");
        assert_eq!(self.count().await, 1, "the valid create is stored");
    }
}

/// The params of a create with `count` extra members made by `member(i)`, as many as fit in a
/// body just under `MAX_REQUEST_BYTES` (1 MiB) when `count` is `None`.
fn params_filled(member: impl Fn(usize) -> String) -> (String, usize) {
    let room = 1_048_576 - create_with_params_text("{}").len() - 64;
    let mut params = valid_params().to_string();
    params.pop();
    let mut count = 0;
    loop {
        let next = format!(",{}", member(count));
        if params.len() + next.len() + 1 > room {
            break;
        }
        params.push_str(&next);
        count += 1;
    }
    params.push('}');
    (params, count)
}

/// A create whose `solutionFamilies` holds as many distinct items as fit under 1 MiB.
fn create_with_huge_solution_families() -> (Vec<u8>, usize) {
    let room = 1_048_576 - create_with_raw("solutionFamilies", b"[]").len() - 64;
    let mut items = String::from("[\"first\"");
    let mut count = 1;
    while items.len() + 10 < room {
        items.push_str(&format!(r#","{count:07}""#));
        count += 1;
    }
    items.push(']');
    (create_with_raw("solutionFamilies", items.as_bytes()), count)
}

/// A body just under `MAX_REQUEST_BYTES` (1 MiB) with as many members or items as fit: refused
/// in bounded time, the first problems named and the rest counted (the answer stays small).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_json_near_the_body_limit_is_refused_cleanly_and_promptly() {
    let service = Process::start();
    let mut failures = Failures::default();

    // ~87,000 distinct unknown members.
    let (params, count) = params_filled(|i| format!(r#""x{i:06}":0"#));
    let body = create_with_params_text(&params);
    let what = format!("{count} unknown members in {} bytes", body.len());
    let answer = service.send(body).await;
    let more = format!("and {} more unknown fields", count - opportunity_service::rpc::params::MAX_NAMED);
    failures.check(|| {
        let response = answered(&answer, &what);
        assert_form_error(response, &what, &["unknown field", "x000000"]);
        assert_form_error(response, &what, &[&more]);
        let listed = response["error"]["data"]["formErrors"].as_array().map_or(0, Vec::len);
        assert!(listed <= opportunity_service::rpc::params::MAX_NAMED + 1, "{what}: {listed} form errors");
    });

    // ~75,000 members, all of one known name.
    let (params, count) = params_filled(|_| r#""source":null"#.to_string());
    let body = create_with_params_text(&params);
    let what = format!("the member \"source\" {count} times in {} bytes", body.len());
    let answer = service.send(body).await;
    failures.check(|| assert_form_error(answered(&answer, &what), &what, &["duplicate", "\"source\""]));

    // A solutionFamilies array of ~116,000 distinct items.
    let (body, count) = create_with_huge_solution_families();
    let what = format!("solutionFamilies of {count} distinct items in {} bytes", body.len());
    let answer = service.send(body).await;
    failures.check(|| assert_field_error(answered(&answer, &what), &what, "solutionFamilies"));

    // One string of nearly 1 MiB.
    let room = 1_048_576 - create_with_raw("scopeSummary", b"\"\"").len() - 64;
    let body = create_with_raw("scopeSummary", format!("\"{}\"", "x".repeat(room)).as_bytes());
    let what = format!("a scopeSummary of {} bytes", body.len());
    let answer = service.send(body).await;
    failures.check(|| assert_field_error(answered(&answer, &what), &what, "scopeSummary"));

    failures.finish();
    service.assert_still_serving().await;
}

/// While near-limit bodies are being refused (two at once: as many as this machine has cores),
/// `/health` and creates are still served promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_callers_are_served_while_huge_bodies_are_refused() {
    let service = Process::start();
    let (body, count) = create_with_huge_solution_families();
    let hostile: Vec<_> = (0..2)
        .map(|_| {
            let (http, url, auth, body) = (service.http.clone(), service.url(), service.auth.clone(), body.clone());
            tokio::spawn(async move { post_within(&http, &url, &auth, body).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health =
        tokio::time::timeout(Duration::from_secs(2), service.http.get(format!("{}health", service.url())).send()).await;
    assert!(
        matches!(&health, Ok(Ok(r)) if r.status().as_u16() == 200),
        "GET /health is answered within 2 s while two {count}-item arrays are validated: {health:?}"
    );
    let started = Instant::now();
    let body = request(json!(1), CREATE, valid_params()).to_string();
    let created = tokio::time::timeout(Duration::from_secs(5), service.send(body)).await;
    let created = created.unwrap_or_else(|_| {
        panic!("a valid create waited {:?} (over 5 s) behind two {count}-item arrays", started.elapsed())
    });
    assert_created(answered(&created, "a valid create meanwhile"), &json!(1), "a valid create");
    for task in hostile {
        let answer = task.await.unwrap();
        let what = format!("a solutionFamilies array of {count} items");
        assert_field_error(answered(&answer, &what), &what, "solutionFamilies");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_numbers_are_refused_cleanly() {
    let app = spawn_app().await;
    let mut failures = Failures::default();
    let digits = "9".repeat(400);
    let numbers = [
        "1e999999999".to_string(),
        "-1e999999999".to_string(),
        "1E+99999999999999999999999999".to_string(),
        "1e-999999999".to_string(),
        "1.5e-99999999999999999999999999".to_string(),
        digits.clone(),
        format!("-{digits}"),
        format!("{digits}.5"),
        format!("0.{digits}"),
        format!("1{}", "0".repeat(400)),
        format!("1{}e-380", "0".repeat(400)),
    ];
    for number in &numbers {
        for field in ["estimatedValue", "probability"] {
            let what = format!("{field}: {}… ({} characters)", &number[..number.len().min(24)], number.len());
            let answer = send(&app, create_with_raw(field, number.as_bytes())).await;
            failures.check(|| assert_field_error(answered(&answer, &what), &what, field));
        }
    }
    let stored = app.count(None).await;
    failures.check(|| assert_eq!(stored, 0, "refused calls write nothing"));
    failures.finish();
    assert_still_serving(&app, 0).await;
}

/// JSON is UTF-8 (RFC 8259 §8.1): a body with bytes that are not UTF-8 is not JSON, wherever
/// the bytes are (§4: body is not JSON → PARSE_ERROR).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_the_body_is_a_parse_error() {
    let app = spawn_app().await;
    let mut failures = Failures::default();
    let create = request(json!(1), CREATE, valid_params()).to_string();
    let bad_sequences: [&[u8]; 6] = [b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80", b"\xe2\x82"];
    for bad in bad_sequences {
        let mut bodies: Vec<(String, Vec<u8>)> = Vec::new();
        // In a string value of the params.
        let value = [b"\"Chiller ".as_slice(), bad, b"\""].concat();
        bodies.push((format!("{bad:02x?} in params.scopeSummary"), create_with_raw("scopeSummary", &value)));
        // In a member name of the params.
        let body = [
            br#"{"jsonrpc":"2.0","id":1,"method":"opportunity.create","params":{"ti"#.as_slice(),
            bad,
            br#"tle":"x"}}"#,
        ]
        .concat();
        bodies.push((format!("{bad:02x?} in a params member name"), body));
        // In the method name.
        let rest = format!(r#"create","params":{}}}"#, valid_params());
        let body = [br#"{"jsonrpc":"2.0","id":1,"method":"opportunity."#.as_slice(), bad, rest.as_bytes()].concat();
        bodies.push((format!("{bad:02x?} in the method name"), body));
        // In a string id.
        let rest = format!(r#"","method":"{CREATE}","params":{}}}"#, valid_params());
        let body = [br#"{"jsonrpc":"2.0","id":"a"#.as_slice(), bad, rest.as_bytes()].concat();
        bodies.push((format!("{bad:02x?} in the id"), body));
        // Between tokens.
        let body = [b"{".as_slice(), bad, &create.as_bytes()[1..]].concat();
        bodies.push((format!("{bad:02x?} between tokens"), body));
        for (what, body) in bodies {
            let answer = send(&app, body).await;
            failures.check(|| {
                assert_refused(answered(&answer, &what), &what, &[-32700]);
            });
        }
    }
    // A whole body in Latin-1.
    let latin1: Vec<u8> = create.replace("Building C", "Bâtiment C").chars().map(|c| c as u32 as u8).collect();
    let answer = send(&app, latin1).await;
    failures.check(|| {
        assert_refused(answered(&answer, "a body in Latin-1"), "a body in Latin-1", &[-32700]);
    });
    let stored = app.count(None).await;
    failures.check(|| assert_eq!(stored, 0, "refused calls write nothing"));
    failures.finish();
    assert_still_serving(&app, 0).await;
}

/// Header values that are not UTF-8 are refused like any other bad value, not a crash.
#[tokio::test]
async fn invalid_utf8_in_headers_is_refused_cleanly() {
    let app = spawn_app().await;
    let body = request(json!(1), CREATE, valid_params()).to_string();
    let send_with = |name: &'static str, value: &'static [u8], bearer: bool| {
        let mut req = app.http.post(app.url()).header("content-type", "application/json").body(body.clone());
        if bearer {
            req = req.header("authorization", format!("Bearer {}", app.token()));
        }
        req = req.header(name, reqwest::header::HeaderValue::from_bytes(value).unwrap());
        async move {
            let response = req.send().await.expect("sent");
            let status = response.status().as_u16();
            (status, serde_json::from_str::<Value>(&response.text().await.unwrap()).unwrap_or(Value::Null))
        }
    };
    let (status, response) = send_with("x-workspace-id", b"\xff\xfe", true).await;
    assert_eq!(status, 200, "{response}");
    assert_field_error(&response, "X-Workspace-Id of bytes ff fe", "workspaceId");
    let (status, response) = send_with("idempotency-key", b"key-\xff", true).await;
    assert_eq!(status, 200, "{response}");
    assert_field_error(&response, "Idempotency-Key with byte ff", "idempotencyKey");
    let (status, response) = send_with("authorization", b"Bearer \xff\xfe", false).await;
    assert_eq!(status, 200, "{response}");
    assert_refused(&response, "Authorization with bytes ff fe", &[-32001]);
    assert_still_serving(&app, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_bytes_are_refused_cleanly() {
    let app = spawn_app().await;
    let mut failures = Failures::default();
    // Escaped: valid JSON, refused by the rules (README: NUL characters are refused).
    for field in ["title", "scopeSummary", "customerId", "source", "idempotencyKey", "expectedCloseDate"] {
        let what = format!("\\u0000 in {field}");
        let answer = send(&app, create_with_raw(field, br#""Chiller\u0000C""#)).await;
        failures.check(|| assert_field_error(answered(&answer, &what), &what, field));
    }
    let answer = send(&app, create_with_raw("solutionFamilies", br#"["HVAC","a\u0000"]"#)).await;
    failures.check(|| {
        assert_field_error(answered(&answer, "NUL item"), "\\u0000 in solutionFamilies.1", "solutionFamilies.1");
    });
    let answer = send(&app, create_with_raw("title\\u0000", br#""x""#)).await;
    failures.check(|| {
        let what = "\\u0000 in a member name";
        assert_form_error(answered(&answer, what), what, &["unknown field"]);
    });
    // Raw: JSON forbids control characters in strings, and a NUL byte is no token.
    let with_raw_nul = |method: &str, params: Value| {
        request(json!(1), method, params).to_string().replace("\\u0001", "\0").into_bytes()
    };
    let mut title = valid_params();
    title["title"] = json!("Chiller\u{1}C");
    let raw_cases: Vec<(&str, Vec<u8>)> = vec![
        ("a raw 0x00 in params.scopeSummary", create_with_raw("scopeSummary", b"\"Chiller\x00C\"")),
        ("a raw 0x00 in params.title", with_raw_nul(CREATE, title)),
        ("a raw 0x00 in the method name", with_raw_nul("opportunity.\u{1}create", valid_params())),
        ("a raw 0x00 between tokens", [b"{\x00".as_slice(), &with_raw_nul(CREATE, valid_params())[1..]].concat()),
        ("a raw 0x00 after the request", [with_raw_nul(CREATE, valid_params()).as_slice(), b"\x00"].concat()),
        ("a body of NUL bytes", vec![0; 64]),
    ];
    for (what, body) in raw_cases {
        let answer = send(&app, body).await;
        failures.check(|| {
            assert_refused(answered(&answer, what), what, &[-32700]);
        });
    }
    let stored = app.count(None).await;
    failures.check(|| assert_eq!(stored, 0, "refused calls write nothing"));
    failures.finish();
    assert_still_serving(&app, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_surrogates_are_refused_cleanly() {
    let app = spawn_app().await;
    let mut failures = Failures::default();
    for escape in [r#""\ud800""#, r#""\udfff""#, r#""Chiller \ud800 C""#, r#""\ud800\u0041""#, r#""\udc00\ud800""#] {
        for field in ["title", "scopeSummary", "customerId", "stage", "expectedCloseDate", "idempotencyKey"] {
            let what = format!("{escape} in {field}");
            let answer = send(&app, create_with_raw(field, escape.as_bytes())).await;
            failures.check(|| assert_field_error(answered(&answer, &what), &what, field));
            if ["title", "scopeSummary", "customerId"].contains(&field) {
                // The message names the rule that the value breaks: it is a string, but no text.
                failures.check(|| {
                    let message = &answered(&answer, &what)["error"]["data"]["fieldErrors"][field][0];
                    let says = if field == "customerId" { "must be a UUID (" } else { "lone surrogate escape" };
                    assert!(message.as_str().is_some_and(|m| m.contains(says)), "{what}: {message}");
                });
            }
        }
        let items = format!(r#"["HVAC",{escape}]"#);
        let what = format!("{escape} in solutionFamilies.1");
        let answer = send(&app, create_with_raw("solutionFamilies", items.as_bytes())).await;
        failures.check(|| assert_field_error(answered(&answer, &what), &what, "solutionFamilies.1"));
    }
    // In a member name of the params: one form error naming the problem, and the fields that
    // were sent are read (no false "is required").
    for name in ["\\ud800", "\\udfffx", "title\\ud800"] {
        let what = format!("a lone surrogate as a member name ({name})");
        let answer = send(&app, create_with_raw(name, b"1")).await;
        failures.check(|| {
            let answer = answered(&answer, &what);
            assert_refused(answer, &what, &[-32602]);
            let data = &answer["error"]["data"];
            assert_eq!(data["fieldErrors"], json!({}), "{what}: no field errors: {answer}");
            assert_eq!(
                data["formErrors"],
                json!(["a field name is not valid text (a lone surrogate escape such as \\ud800)"]),
                "{what}: {answer}"
            );
        });
    }
    // In the method name or the id.
    let what = "a lone surrogate in the method";
    let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"opportunity.create\ud800","params":{}}}"#, valid_params());
    let answer = send(&app, body).await;
    failures.check(|| {
        assert_refused(answered(&answer, what), what, &[-32700, -32600, -32601]);
    });
    let what = "a lone surrogate in the id";
    let body = format!(r#"{{"jsonrpc":"2.0","id":"\ud800","method":"{CREATE}","params":{}}}"#, valid_params());
    let answer = send(&app, body).await;
    failures.check(|| {
        assert_refused(answered(&answer, what), what, &[-32700, -32600]);
    });
    let stored = app.count(None).await;
    failures.check(|| assert_eq!(stored, 0, "refused calls write nothing"));
    failures.finish();
    assert_still_serving(&app, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_keys_are_refused_and_never_resolved_silently() {
    let app = spawn_app().await;
    let mut failures = Failures::default();
    // The same member twice in params, same or different values, valid or not: a form error
    // naming it; neither value wins.
    let mut cases: Vec<(String, String)> = Vec::new();
    for (field, second) in [
        ("title", r#""Second title""#),
        ("title", r#""Chiller retrofit, Building C""#),
        ("customerId", r#""6ba7b810-9dad-11d1-80b4-00c04fd430c8""#),
        ("pipelineType", r#""service""#),
    ] {
        let params = String::from_utf8(params_with_extra_raw(field, second.as_bytes())).unwrap();
        cases.push((field.to_string(), params));
    }
    // An invalid value, then a valid one.
    let params = String::from_utf8(params_with_raw("probability", b"500")).unwrap();
    cases.push(("probability".into(), format!("{},\"probability\":50}}", &params[..params.len() - 1])));
    // In the one-element array form too.
    let params = String::from_utf8(params_with_raw("stage", br#""won""#)).unwrap();
    cases.push(("stage".into(), format!("[{},\"stage\":\"lead\"}}]", &params[..params.len() - 1])));
    for (field, params) in cases {
        let what = format!("{field} twice in params {params}");
        let answer = send(&app, create_with_params_text(&params)).await;
        failures.check(|| assert_form_error(answered(&answer, &what), &what, &["duplicate", &format!("\"{field}\"")]));
    }

    // The same member twice in the request object: not a JSON-RPC request one can trust.
    let valid = valid_params().to_string();
    let mut invalid = valid_params();
    invalid["title"] = json!("");
    let invalid = invalid.to_string();
    let bodies = [
        (
            "params twice (invalid, then valid)",
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{CREATE}","params":{invalid},"params":{valid}}}"#),
        ),
        (
            "params twice (valid, then invalid)",
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{CREATE}","params":{valid},"params":{invalid}}}"#),
        ),
        (
            "method twice",
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"opportunity.nope","method":"{CREATE}","params":{valid}}}"#),
        ),
        (
            "jsonrpc twice",
            format!(r#"{{"jsonrpc":"1.0","jsonrpc":"2.0","id":1,"method":"{CREATE}","params":{valid}}}"#),
        ),
        ("id twice", format!(r#"{{"jsonrpc":"2.0","id":1,"id":2,"method":"{CREATE}","params":{valid}}}"#)),
        ("id twice, the same", format!(r#"{{"jsonrpc":"2.0","id":7,"method":"{CREATE}","params":{valid},"id":7}}"#)),
    ];
    for (what, body) in bodies {
        let answer = send(&app, body).await;
        failures.check(|| {
            assert_refused(answered(&answer, what), what, &[-32600, -32602]);
        });
    }
    // A duplicate id does not make a body that is not JSON at all an invalid request.
    let what = "id twice, then bytes that are not JSON";
    let answer =
        send(&app, format!(r#"{{"jsonrpc":"2.0","id":1,"id":2,"method":"{CREATE}","params":{valid}}} x"#)).await;
    failures.check(|| {
        assert_refused(answered(&answer, what), what, &[-32700]);
    });
    let stored = app.count(None).await;
    failures.check(|| assert_eq!(stored, 0, "refused calls write nothing"));
    failures.finish();
    assert_still_serving(&app, 0).await;
}

// ---------------------------------------------------------------------------------------------
// Issue 9 (round two): the edge. Limits per connection and in total, idle sockets, the socket
// cap, WebSocket ids and error shapes, labels and log lines, refusals in §4's shape.
// ---------------------------------------------------------------------------------------------

/// The resident set of this process (the app runs in it), in MiB.
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib / 1024
}

/// Open file descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

type RawWs =
    (soketto::Sender<tokio_util::compat::Compat<TcpStream>>, soketto::Receiver<tokio_util::compat::Compat<TcpStream>>);

/// A WebSocket client of our own (soketto), with the app's token, for what the jsonrpsee client
/// cannot do: send raw text, and not read.
async fn raw_ws(app: &TestApp) -> RawWs {
    use tokio_util::compat::TokioAsyncReadCompatExt;
    let stream = TcpStream::connect(app.addr).await.unwrap();
    let host = app.addr.to_string();
    let auth = app.bearer();
    let headers = [soketto::handshake::client::Header { name: "Authorization", value: auth.as_bytes() }];
    let mut client = soketto::handshake::Client::new(stream.compat(), &host, "/");
    client.set_headers(&headers);
    let accepted = client.handshake().await.expect("handshake");
    assert!(matches!(accepted, soketto::handshake::ServerResponse::Accepted { .. }), "handshake accepted");
    let mut builder = client.into_builder();
    builder.set_max_message_size(64 * 1024 * 1024);
    builder.finish()
}

/// Sends one text message and reads the next data message, as JSON.
async fn ws_exchange(ws: &mut RawWs, text: &str) -> Value {
    ws.0.send_text(text).await.unwrap();
    ws.0.flush().await.unwrap();
    ws_next(ws).await
}

async fn ws_next(ws: &mut RawWs) -> Value {
    let mut data = Vec::new();
    tokio::time::timeout(ANSWER_WITHIN, ws.1.receive_data(&mut data))
        .await
        .expect("an answer within the time")
        .expect("an answer");
    serde_json::from_slice(&data).unwrap_or_else(|_| panic!("JSON answer: {}", String::from_utf8_lossy(&data)))
}

/// Item 1: a WebSocket client that sends big batches and never reads is not read either: the
/// memory of the process stays bounded, others are served, and the stuck connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_client_that_never_reads_stops_being_read_and_is_closed() {
    let app = spawn_app_with(&["--request-timeout", "2s", "--ws-ping-interval", "1s"]).await;
    let batch: Vec<Value> = (0..100).map(|i| request(json!(i), "rpc.discover", json!([]))).collect();
    let frame = json!(batch).to_string();
    let rss_before = rss_mib();
    let mut ws = raw_ws(&app).await;
    // Send for at most 4 s; once the service stops reading, sends stall.
    let mut sent = 0usize;
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline && sent < 2000 {
        let send = async {
            ws.0.send_text(&frame).await?;
            ws.0.flush().await
        };
        match tokio::time::timeout_at(deadline.into(), send).await {
            Ok(Ok(())) => sent += 1,
            _ => break,
        }
    }
    let rss_during = rss_mib();
    eprintln!("a WebSocket that never reads: {sent} frames taken, RSS {rss_before} → {rss_during} MiB");
    assert!(sent < 2000, "the service kept reading {sent} frames of a client that reads nothing");
    assert!(
        rss_during < rss_before + 400,
        "RSS grew from {rss_before} MiB to {rss_during} MiB for one connection that does not read"
    );
    assert_others_served_promptly(&app, "while a WebSocket client does not read").await;
    // Stuck past REQUEST_TIMEOUT (and silent to pings): closed. What was buffered drains, then EOF.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut data = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            data.clear();
            if ws.1.receive_data(&mut data).await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the stuck WebSocket is closed");
    assert_still_serving(&app, app.count(None).await).await;
}

/// Item 5: HTTP clients that post big batches and never read: answers waiting to be written are
/// bounded in total (beyond the budget, calls are refused before they run, in §4's shape), and
/// the sockets are closed after the write timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_clients_that_never_read_are_bounded_and_closed() {
    let app = spawn_app_with(&["--request-timeout", "2s", "--max-pending-response-bytes", "4194304"]).await;
    let batch: Vec<Value> = (0..30).map(|i| request(json!(i), "rpc.discover", json!([]))).collect();
    let body = json!(batch).to_string();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        app.addr,
        body.len()
    );
    let rss_before = rss_mib();
    let fds_before = open_fds();
    let mut held = Vec::new();
    for _ in 0..60 {
        // A small receive buffer, so that the answers wait in the service, not in this kernel.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(app.addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body.as_bytes()).await.unwrap();
        held.push(stream);
    }
    // Let the service answer them all (it cannot write them out).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss_during = rss_mib();
    let fds_during = open_fds();
    eprintln!("60 HTTP clients that never read: RSS {rss_before} → {rss_during} MiB, fds {fds_before} → {fds_during}");
    assert!(rss_during < rss_before + 400, "RSS grew from {rss_before} MiB to {rss_during} MiB");
    // While the budget is spent, a call is refused before it runs, retryably.
    let (status, response) = app.post(&request(json!(1), CREATE, valid_params()), &app.token()).await;
    if status == 503 {
        assert_refused(&response, "a call while answers wait", &[-32603]);
        assert_eq!(response["error"]["data"]["retryable"], true, "{response}");
    } else {
        assert_eq!(status, 200, "{response}");
    }
    // Past the write timeout, the stuck sockets are closed: each drains to EOF.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut closed = 0;
    for stream in &mut held {
        if drain_until_closed(stream, Duration::from_secs(10)).await.is_some() {
            closed += 1;
        }
    }
    assert_eq!(closed, held.len(), "every stuck socket is closed");
    drop(held);
    assert_still_serving(&app, app.count(None).await).await;
}

/// Items 4 and 5: open sockets are capped (HTTP and WebSocket alike); a few more serve the
/// probes only (calls on them: 429 in §4's shape); beyond, a clean 503; idle sockets are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_sockets_are_capped_and_idle_ones_closed() {
    let app = spawn_app_with(&["--max-connections", "4", "--request-timeout", "2s"]).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(app.addr).await.unwrap());
    }
    // Wait until the service has accepted them: a probe answers on the headroom.
    let health = tokio::time::timeout(Duration::from_secs(5), app.http.get(format!("{}health", app.url())).send())
        .await
        .expect("GET /health answers")
        .expect("GET /health");
    assert_eq!(health.status().as_u16(), 200, "the probes are served beyond MAX_CONNECTIONS");
    let (status, response) = app.post(&request(json!(1), CREATE, valid_params()), &app.token()).await;
    assert_eq!(status, 429, "a call beyond MAX_CONNECTIONS sockets: {response}");
    assert_refused(&response, "a call beyond the socket cap", &[-32603]);
    assert_eq!(response["error"]["data"]["retryable"], true, "{response}");
    // Fill the headroom too; the next socket is refused before it says anything.
    let mut headroom = Vec::new();
    for _ in 0..opportunity_service::serve::PROBE_HEADROOM + 2 {
        headroom.push(TcpStream::connect(app.addr).await.unwrap());
    }
    let mut refused = 0;
    for stream in &mut headroom {
        if let Some(Outcome::Response { status: 503, body }) =
            response_or_close(stream, Duration::from_millis(300)).await
        {
            let response: Value = serde_json::from_slice(&body).expect("a JSON-RPC error");
            assert_refused(&response, "a socket beyond every limit", &[-32603]);
            refused += 1;
        }
    }
    assert!(refused >= 1, "a socket beyond the cap and the headroom is refused with 503");
    // Idle sockets (nothing sent) are closed after REQUEST_TIMEOUT, and the slots come back.
    let started = Instant::now();
    for stream in &mut idle {
        assert!(
            drain_until_closed(stream, CUT_OFF_WITHIN).await.is_some(),
            "an idle socket is still open after {:?}",
            started.elapsed()
        );
    }
    drop(idle);
    drop(headroom);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, response) = app.post(&request(json!(2), CREATE, valid_params()), &app.token()).await;
        if status == 200 {
            assert_created(&response, &json!(2), "a valid create");
            break;
        }
        assert!(Instant::now() < deadline, "calls are still refused after the idle sockets were closed: {response}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A body whose chunked framing is broken is answered (HTTP 400, -32600 BAD_REQUEST in §4's
/// shape) and its connection closed; it was closed without a word. The same call with sound
/// framing creates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_with_broken_framing_gets_an_answer() {
    let app = spawn_app().await;
    let body = request(json!(1), CREATE, valid_params()).to_string();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        app.addr,
        app.bearer()
    );
    for (chunks, status) in [
        (format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len()), 200),
        (format!("zz\r\n{body}\r\n0\r\n\r\n"), 400),
        (format!("{:x}\r\n{body}XX0\r\n\r\n", body.len()), 400),
    ] {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(chunks.as_bytes()).await.unwrap();
        let outcome = response_or_close(&mut stream, ANSWER_WITHIN).await;
        let Some(Outcome::Response { status: got, body }) = outcome else {
            panic!("{chunks:?}: no answer: {outcome:?}");
        };
        assert_eq!(got, status, "{chunks:?}: {}", String::from_utf8_lossy(&body));
        let answer: Value = serde_json::from_slice(&body).expect("a JSON-RPC answer");
        if status == 400 {
            assert_refused(&answer, "a body with broken framing", &[-32600]);
            assert!(drain_until_closed(&mut stream, CUT_OFF_WITHIN).await.is_some(), "the connection ends");
        } else {
            assert_created(&answer, &json!(1), "a chunked body");
        }
    }
    assert_eq!(app.count(None).await, 1, "only the sound body created");
}

/// An idle WebSocket whose peer never answers the Close (nor pings: it reads nothing) is
/// dropped a short grace after the Close; it held its socket for ever. The Close frame (opcode
/// 8, code 1000) comes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_websocket_that_ignores_the_close_is_dropped() {
    let app = spawn_app_with(&["--request-timeout", "1s"]).await;
    let auth = format!("Authorization: {}", app.bearer());
    let (status, _, mut stream) = ws_handshake(app.addr, "/", &[&auth]).await;
    assert_eq!(status, 101);
    let started = Instant::now();
    // Idle after 1 s, looked at within 0.25 s, 1 s of grace: closed well within 10 s.
    let drained = drain_until_closed(&mut stream, Duration::from_secs(10)).await;
    let drained = drained.unwrap_or_else(|| panic!("still open after {:?}", started.elapsed()));
    let close = drained.windows(4).any(|w| w == [0x88, 0x02, 0x03, 0xe8]);
    assert!(close, "a Close frame with code 1000 came first: {drained:02x?}");
}

/// Item 4: a kept-alive connection that sends nothing after its answer is closed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_kept_alive_connection_is_closed() {
    let app = spawn_app_with(&["--request-timeout", "1s"]).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr).as_bytes()).await.unwrap();
    let outcome = response_or_close(&mut stream, Duration::from_secs(5)).await;
    assert!(matches!(outcome, Some(Outcome::Response { status: 200, .. })), "{outcome:?}");
    let started = Instant::now();
    assert!(drain_until_closed(&mut stream, CUT_OFF_WITHIN).await.is_some(), "idle after {:?}", started.elapsed());
}

/// Item 2: over WebSocket, ids jsonrpsee cannot hold are answered and echoed as written, as over
/// HTTP; in a batch too. Every call that ran was answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_ids_of_every_number_form_are_answered_as_written() {
    let app = spawn_app().await;
    let mut ws = raw_ws(&app).await;
    let ids = ["1.5", "-1", "1.0", "1e2", "-0", "18446744073709551616", "7"];
    let params = valid_params().to_string();
    for id in ids {
        let text = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{CREATE}","params":{params}}}"#);
        ws.0.send_text(&text).await.unwrap();
        ws.0.flush().await.unwrap();
        let mut data = Vec::new();
        tokio::time::timeout(ANSWER_WITHIN, ws.1.receive_data(&mut data)).await.expect("answered").unwrap();
        let answer = String::from_utf8(data).unwrap();
        assert!(answer.contains(&format!(r#""id":{id},"#)), "id {id} echoed as written: {answer}");
        assert!(answer.contains(r#""result""#), "id {id}: {answer}");
    }
    let batch = format!(
        "[{}]",
        ids.iter()
            .map(|id| format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{CREATE}","params":{params}}}"#))
            .collect::<Vec<_>>()
            .join(",")
    );
    ws.0.send_text(&batch).await.unwrap();
    ws.0.flush().await.unwrap();
    let mut data = Vec::new();
    tokio::time::timeout(ANSWER_WITHIN, ws.1.receive_data(&mut data)).await.expect("answered").unwrap();
    let answer = String::from_utf8(data).unwrap();
    let items: Vec<Value> = serde_json::from_str(&answer).unwrap();
    assert_eq!(items.len(), ids.len(), "every item of the batch is answered: {answer}");
    for id in ids {
        assert!(answer.contains(&format!(r#""id":{id},"#)), "id {id} echoed as written in the batch: {answer}");
    }
    assert_eq!(app.count(None).await, 2 * ids.len() as i64, "as many creates as answers");
}

/// CONTRACT.md §2: ids are echoed exactly as written. A string id written with escapes came
/// back as jsonrpsee read it (`"a\u0041"` as `"aA"`), and over WebSocket an error's id that the
/// relay had swapped went through `serde_json::Value` (`1e2` came back `100.0`). Both
/// transports, results and errors, alone and in a batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_echoed_byte_for_byte_on_both_transports() {
    let app = spawn_app().await;
    let ids = [r#""a\u0041""#, r#""tab\there""#, r#""\/x""#, r#""\u00e9t\u00e9""#, "1e2", "-0", "1.50"];
    let params = valid_params().to_string();
    let call =
        |id: &str, method: &str| format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{params}}}"#);
    let auth = app.bearer();
    let post = |body: String| {
        let request = app.http.post(app.url()).header("content-type", "application/json");
        request.header("authorization", auth.as_str()).body(body).send()
    };
    let mut ws = raw_ws(&app).await;
    for id in ids {
        for (method, outcome) in [(CREATE, r#""result""#), ("opportunity.nope", r#""error""#)] {
            let text = post(call(id, method)).await.unwrap().text().await.unwrap();
            assert!(text.contains(&format!(r#""id":{id},"#)), "HTTP {method}: id {id} echoed as written: {text}");
            assert!(text.contains(outcome), "HTTP {method}, id {id}: {text}");
            ws.0.send_text(&call(id, method)).await.unwrap();
            ws.0.flush().await.unwrap();
            let mut data = Vec::new();
            tokio::time::timeout(ANSWER_WITHIN, ws.1.receive_data(&mut data)).await.expect("answered").unwrap();
            let text = String::from_utf8(data).unwrap();
            assert!(text.contains(&format!(r#""id":{id},"#)), "WebSocket {method}: id {id} echoed as written: {text}");
            assert!(text.contains(outcome), "WebSocket {method}, id {id}: {text}");
        }
    }
    // A batch sent over both transports: the two answers' text.
    let mut both = async |batch: String| {
        let text = post(batch.clone()).await.unwrap().text().await.unwrap();
        ws.0.send_text(&batch).await.unwrap();
        ws.0.flush().await.unwrap();
        let mut data = Vec::new();
        tokio::time::timeout(ANSWER_WITHIN, ws.1.receive_data(&mut data)).await.expect("answered").unwrap();
        [("HTTP", text), ("WebSocket", String::from_utf8(data).unwrap())]
    };
    for (transport, text) in both(format!("[{}]", ids.map(|id| call(id, CREATE)).join(","))).await {
        for id in ids {
            assert!(text.contains(&format!(r#""id":{id},"#)), "{transport} batch: id {id} echoed as written: {text}");
        }
    }
    // Items that jsonrpsee refuses itself (its errors are rewritten into §4's shape).
    let invalid = format!("[{}]", ids.map(|id| format!(r#"{{"jsonrpc":"1.0","id":{id},"method":"x"}}"#)).join(","));
    for (transport, text) in both(invalid).await {
        assert_eq!(text.matches("BAD_REQUEST").count(), ids.len(), "{transport}: {text}");
        for id in ids {
            assert!(text.contains(&format!(r#""id":{id},"#)), "{transport} invalid item: id {id} as written: {text}");
        }
    }
    assert_eq!(app.count(None).await, 4 * ids.len() as i64, "as many creates as answers");
}

/// Item 8: WebSocket errors in §4's shape, as over HTTP; the connection survives them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_errors_have_the_contract_shape() {
    let app = spawn_app_with(&["--max-request-bytes", "2000"]).await;
    let mut ws = raw_ws(&app).await;
    let mut failures = Failures::default();
    let params = valid_params().to_string();
    let cases: Vec<(&str, String, i64)> = vec![
        ("a message over MAX_REQUEST_BYTES", format!(r#"{{"x":"{}"}}"#, "x".repeat(3000)), -32013),
        ("hello", "hello".into(), -32700),
        ("{}", "{}".into(), -32600),
        ("null", "null".into(), -32600),
        ("5", "5".into(), -32600),
        ("[]", "[]".into(), -32600),
        ("jsonrpc 1.0", format!(r#"{{"jsonrpc":"1.0","id":1,"method":"{CREATE}","params":{params}}}"#), -32600),
        (
            "method twice",
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"x.y","method":"{CREATE}","params":{params}}}"#),
            -32600,
        ),
        ("an object id", format!(r#"{{"jsonrpc":"2.0","id":{{}},"method":"{CREATE}","params":{params}}}"#), -32600),
    ];
    for (what, text, code) in cases {
        let answer = ws_exchange(&mut ws, &text).await;
        failures.check(|| {
            assert_refused(&answer, what, &[code]);
        });
    }
    failures.finish();
    let answer = ws_exchange(&mut ws, &request(json!(9), CREATE, valid_params()).to_string()).await;
    assert_created(&answer, &json!(9), "a valid create");
    assert_eq!(app.count(None).await, 1, "refused messages run nothing");
}

/// Item 6: method names a caller makes up do not add metric series.
#[tokio::test]
async fn unknown_method_names_add_no_metric_series() {
    let app = spawn_app().await;
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    let metrics =
        || async { app.http.get(format!("{}metrics", app.url())).send().await.unwrap().text().await.unwrap() };
    app.post_raw(request(json!(0), "opportunity.x0", json!({})).to_string(), &[]).await;
    let before = series(&metrics().await);
    for chunk in 0..3 {
        let batch: Vec<Value> =
            (0..100).map(|i| request(json!(i), &format!("opportunity.x{}", chunk * 100 + i + 1), json!({}))).collect();
        app.post_raw(json!(batch).to_string(), &[]).await;
    }
    let text = metrics().await;
    assert_eq!(series(&text), before, "300 unknown method names added series:\n{text}");
    assert!(!text.contains("opportunity.x1"), "an unknown name became a label:\n{text}");
    assert!(text.contains(r#"method="unknown""#), "unknown names are counted as `unknown`:\n{text}");
}

/// Item 7: method names reach the text log only when registered; caller text never does.
#[tokio::test]
async fn method_names_never_reach_the_log_raw() {
    let db = TestDatabase::new();
    let service = ServiceProcess::start(&db.url, &[("LOG_FORMAT", "text")]);
    let client = reqwest::Client::new();
    let long = format!("opportunity.{}", "L".repeat(100_000));
    let names = ["opportunity.create\nFORGED line", "opportunity.\u{1b}[31mred", "opportunity.nul\u{0}x", &long];
    for name in names {
        let body = request(json!(1), name, json!({})).to_string();
        let response = client
            .post(format!("http://{}/", service.addr))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
    }
    // The lines are written when the answers are; give the reader thread a moment.
    for _ in 0..100 {
        let calls = service.log.lock().unwrap().lines().filter(|l| l.contains("call")).count();
        if calls >= names.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = service.log.lock().unwrap().clone();
    assert!(!log.contains("FORGED"), "a newline in a method name forged a log line:\n{log:.2000}");
    assert!(!log.contains("\u{1b}[31m"), "an escape sequence reached the log");
    assert!(!log.contains("LLLLLLLLLL"), "a 100 KB method name reached the log");
    assert!(!log.contains('\u{0}'), "a NUL reached the log");
    assert!(log.contains("unknown"), "unknown methods are logged as `unknown`:\n{log:.2000}");
    assert!(log.len() < 64 * 1024, "the log stays small: {} bytes", log.len());
}

/// Item 16: a Content-Length over MAX_REQUEST_BYTES is refused at once (413 in §4's shape),
/// before the body is read and without `100 Continue`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_length_over_the_limit_is_refused_at_once() {
    let app = spawn_app_with(&["--request-timeout", "30s"]).await;
    for expect in ["", "Expect: 100-continue\r\n"] {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        let head = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n{expect}\r\n",
            app.addr
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        if expect.is_empty() {
            stream.write_all(b"{\"jsonrpc\":\"2.0\"").await.unwrap();
        }
        // Far less than REQUEST_TIMEOUT: the refusal does not wait for the body.
        let outcome = response_or_close(&mut stream, Duration::from_secs(10)).await;
        let Some(Outcome::Response { status, body }) = outcome else {
            panic!("{expect:?}: no answer to a declared length over the limit: {outcome:?}")
        };
        assert_eq!(status, 413, "{expect:?}: {}", String::from_utf8_lossy(&body));
        let response: Value = serde_json::from_slice(&body).expect("a JSON-RPC error");
        assert_refused(&response, "Content-Length: 2000000", &[-32013]);
    }
    assert_still_serving(&app, 0).await;
}

/// Item 15: 415 and 429 are JSON-RPC error objects.
#[tokio::test]
async fn unsupported_content_type_is_a_json_rpc_error() {
    let app = spawn_app().await;
    let body = request(json!(1), CREATE, valid_params()).to_string();
    for content_type in [None, Some("text/plain"), Some("application/x-www-form-urlencoded")] {
        let mut request = app.http.post(app.url()).header("authorization", app.bearer()).body(body.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 415, "{content_type:?}");
        let answer: Value = response.json().await.expect("a JSON body");
        assert_refused(&answer, "a body that is not application/json", &[-32600]);
    }
    assert_eq!(app.count(None).await, 0);
}

/// Item 3: many handshakes without a token are refused and hold nothing: authenticated callers
/// are served meanwhile and afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_handshakes_never_lock_callers_out() {
    let app = spawn_app_with(&["--max-connections", "16"]).await;
    let mut held = Vec::new();
    for _ in 0..40 {
        let (status, _, stream) = ws_handshake(app.addr, "/", &[]).await;
        assert_eq!(status, 401);
        held.push(stream);
    }
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, response) = app.post(&request(json!(1), CREATE, valid_params()), &app.token()).await;
        if status == 200 {
            assert_created(&response, &json!(1), "a valid create");
            break;
        }
        assert!(Instant::now() < deadline, "an authenticated create is still refused: {response}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// CONTRACT §3: a token in the URL of a handshake never reaches a log line; §2: nor do method
/// names or other caller text, raw. At every level: at `trace`, jsonrpsee logged the request
/// headers (the bearer token), the HTTP body (method names, params) and the URI.
#[tokio::test]
async fn tokens_and_caller_text_are_never_logged_at_any_level() {
    for level in ["debug", "trace"] {
        let db = TestDatabase::new();
        let service = ServiceProcess::start(&db.url, &[("RUST_LOG", level)]);
        let token = sign(&claims(Uuid::new_v4(), &[Uuid::new_v4()], ALL_SCOPES));
        let (status, _, _) = ws_handshake(service.addr, &format!("/?access_token={token}"), &[]).await;
        assert_eq!(status, 101, "the handshake with the query token is accepted");
        let (status, _, _) = ws_handshake(service.addr, "/?access_token=not.a.token", &[]).await;
        assert_eq!(status, 401);
        let client = reqwest::Client::new();
        let body = json!([
            request(json!(1), "XYZZYmethod", json!({"x": "HIDDENPARAMQQ"})),
            request(
                json!(2),
                CREATE,
                json!({"title": "HIDDENTITLEQQ", "customerId": Uuid::new_v4(),
                                              "pipelineType": "retrofit"})
            ),
        ]);
        for url in [format!("http://{}/", service.addr), format!("http://{}/?access_token={token}", service.addr)] {
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {token}"))
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 200);
        }
        // Over WebSocket: a call with caller text (jsonrpsee logged an unknown subscription id,
        // as written, at debug).
        {
            use tokio_util::compat::TokioAsyncReadCompatExt;
            let stream = TcpStream::connect(service.addr).await.unwrap();
            let host = service.addr.to_string();
            let auth = format!("Bearer {token}");
            let headers = [soketto::handshake::client::Header { name: "Authorization", value: auth.as_bytes() }];
            let mut client = soketto::handshake::Client::new(stream.compat(), &host, "/");
            client.set_headers(&headers);
            let accepted = client.handshake().await.expect("handshake");
            assert!(matches!(accepted, soketto::handshake::ServerResponse::Accepted { .. }));
            let (mut tx, mut rx) = client.into_builder().finish();
            let call = r#"{"jsonrpc":"2.0","id":7,"method":"opportunity.unsubscribe","params":["HIDDENSUBIDQQ"]}"#;
            tx.send_text(call).await.unwrap();
            tx.flush().await.unwrap();
            let mut data = Vec::new();
            tokio::time::timeout(ANSWER_WITHIN, rx.receive_data(&mut data)).await.expect("answered").unwrap();
        }
        // Every call's own line is written (the log is written in order): then what jsonrpsee
        // wrote about the calls is in too.
        let calls = |log: &str| log.lines().filter(|l| l.contains(" call") || l.contains("\"call\"")).count();
        let deadline = Instant::now() + Duration::from_secs(10);
        while calls(&service.log.lock().unwrap()) < 5 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = service.log.lock().unwrap().clone();
        assert!(calls(&log) >= 5, "RUST_LOG={level}: a line per call (2 batches of 2, 1 WebSocket call):\n{log:.3000}");
        let signature = token.rsplit('.').next().unwrap();
        assert!(log.contains("listening on"), "RUST_LOG={level}: the service logs:\n{log:.2000}");
        for secret in [signature, "not.a.token", "XYZZYmethod", "HIDDENPARAMQQ", "HIDDENTITLEQQ", "HIDDENSUBIDQQ"] {
            let line = log.lines().find(|line| line.contains(secret));
            assert!(line.is_none(), "RUST_LOG={level}: {secret} reached the log: {line:?}");
        }
    }
}

/// Item 4: under a low open-file limit, the socket cap fits under it: a flood of idle sockets is
/// refused cleanly or closed after REQUEST_TIMEOUT, `/health` and creates are served again soon,
/// and `accept` failures (if any) are logged at most about once a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_socket_flood_under_a_low_fd_limit_is_survived_quietly() {
    let db = TestDatabase::new();
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg("ulimit -n 256 && exec \"$0\"")
        .arg(env!("CARGO_BIN_EXE_opportunity-service"))
        .env("DATABASE_URL", &db.url)
        .env("AUTH_JWT_SECRET", SECRET)
        .env("REQUEST_TIMEOUT", "1s");
    let service = ServiceProcess::spawn(command);
    let started = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..400 {
        match TcpStream::connect(service.addr).await {
            Ok(stream) => idle.push(stream),
            Err(_) => break,
        }
    }
    let client = reqwest::Client::new();
    let token = sign(&claims(Uuid::new_v4(), &[Uuid::new_v4()], ALL_SCOPES));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let health =
            tokio::time::timeout(Duration::from_secs(5), client.get(format!("http://{}/health", service.addr)).send())
                .await;
        if matches!(&health, Ok(Ok(r)) if r.status().as_u16() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "GET /health is not answered during an idle-socket flood: {health:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let created = create_request(&client, service.addr, &token, &valid_params())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("a create is answered");
    let status = created.status().as_u16();
    let answer: Value = created.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert!(answer["result"]["id"].is_string(), "{answer}");
    drop(idle);
    let log = service.log.lock().unwrap().clone();
    let accept_lines = log.lines().filter(|l| l.contains("accept failed")).count() as u64;
    let seconds = started.elapsed().as_secs() + 2;
    eprintln!("idle-socket flood under ulimit -n 256: {accept_lines} accept-failure lines in {seconds} s");
    assert!(accept_lines <= seconds, "{accept_lines} accept-failure lines in {seconds} s:\n{log:.3000}");
    assert!(log.contains("serving fewer sockets"), "the lowered cap is logged:\n{log:.3000}");
}

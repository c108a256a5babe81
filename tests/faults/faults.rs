//! Database faults (issue 4, item 2; CONTRACT.md §4 SERVICE_UNAVAILABLE, §5 durability): the
//! service runs as a process against a database the test owns, and the test breaks that
//! database while creates are under way:
//!
//! - PostgreSQL stopped (fast shutdown) under load, then started again;
//! - PostgreSQL frozen (SIGSTOP: connections stay open, nothing answers), then thawed;
//! - the only pooled connection stuck behind a lock (PostgreSQL table lock, SQLite write lock);
//! - the SQLite database file made read-only (`chattr +i`) and its disk full (a small tmpfs).
//!
//! While the fault lasts every call must come back within a bound (no hang) with -32603 and no
//! SQL or paths; once it is lifted the same process serves again. Afterwards every answered
//! success is stored exactly once, and nothing else is.
//!
//! They bring their own databases, so they run in the SQLite pass only (see
//! [`crate::pg_instance::sqlite_pass_only`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::Connection;
use diesel::connection::SimpleConnection;
use futures_util::future::join_all;
use opportunity_service::auth::ALL_SCOPES;
use serde_json::{Value, json};
use tempfile::TempDir;
use uuid::Uuid;

use crate::helpers::*;
use crate::pg_instance::{PgInstance, StopMode, StoredRow, in_ci, sqlite_pass_only, stored_rows};

// ---------------------------------------------------------------------------------------------
// Calls and answers (shared with soak.rs)
// ---------------------------------------------------------------------------------------------

/// No call may take longer than this, whatever the fault: a bound against hangs, not a speed
/// measure.
pub(crate) const CALL_BOUND: Duration = Duration::from_secs(10);

/// What one HTTP call came back with.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// A successful create: the `result`.
    Created(Value),
    /// A JSON-RPC error: the `error` object.
    Error(Value),
    /// Failed below HTTP: refused, reset, closed before the answer.
    Transport(String),
    /// No answer within [`CALL_BOUND`].
    Hung,
    /// An answer that is neither a result nor an error.
    Garbled(String),
}

impl Answer {
    /// The id of a successful create.
    pub(crate) fn created_id(&self) -> Option<String> {
        match self {
            Answer::Created(result) => result["id"].as_str().map(str::to_lowercase),
            _ => None,
        }
    }

    /// Whether the same call may be sent again: no answer, or an answer that says so.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            Answer::Transport(_) | Answer::Hung => true,
            Answer::Error(e) => e["data"]["retryable"] == json!(true),
            _ => false,
        }
    }
}

/// An HTTP client whose calls give up after [`CALL_BOUND`].
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(CALL_BOUND).build().unwrap()
}

/// POSTs one `opportunity.create` with an optional `Idempotency-Key` header; the answer and how
/// long it took.
pub(crate) async fn http_create(
    http: &reqwest::Client,
    addr: SocketAddr,
    token: &str,
    params: &Value,
    key_header: Option<&str>,
) -> (Answer, Duration) {
    let started = Instant::now();
    let mut req = create_request(http, addr, token, params);
    if let Some(key) = key_header {
        req = req.header("idempotency-key", key);
    }
    let answer = match req.send().await {
        Err(e) if e.is_timeout() => Answer::Hung,
        Err(e) => Answer::Transport(format!("{e:?}")),
        Ok(resp) => {
            let status = resp.status().as_u16();
            match resp.text().await {
                Err(e) if e.is_timeout() => Answer::Hung,
                Err(e) => Answer::Transport(format!("{e:?}")),
                Ok(text) => parse_answer(status, &text),
            }
        }
    };
    (answer, started.elapsed())
}

/// Sorts one JSON-RPC response body.
pub(crate) fn parse_answer(status: u16, text: &str) -> Answer {
    match serde_json::from_str::<Value>(text) {
        Ok(v) if v["result"]["id"].is_string() && v.get("error").is_none() => Answer::Created(v["result"].clone()),
        Ok(v) if v["error"].is_object() && v.get("result").is_none() => Answer::Error(v["error"].clone()),
        _ => Answer::Garbled(format!("HTTP {status}: {text}")),
    }
}

/// `GET /ready`: its status, or why there was none within [`CALL_BOUND`].
pub(crate) async fn ready(http: &reqwest::Client, addr: SocketAddr) -> Result<u16, String> {
    match http.get(format!("http://{addr}/ready")).send().await {
        Ok(resp) => Ok(resp.status().as_u16()),
        Err(e) if e.is_timeout() => Err(format!("no answer within {CALL_BOUND:?}")),
        Err(e) => Err(format!("{e:?}")),
    }
}

/// A token for `user` in `workspace`, with every scope.
pub(crate) fn token_for(user: Uuid, workspace: Uuid) -> String {
    sign(&claims(user, &[workspace], ALL_SCOPES))
}

/// Valid params with a title of their own, so that stored rows can be traced to their call.
pub(crate) fn titled(title: &str) -> Value {
    let mut params = valid_params();
    params["title"] = json!(title);
    params
}

/// What in an error object would leak internals: SQL, driver words, paths. `None` when clean.
pub(crate) fn leak_in(error: &Value) -> Option<String> {
    const WORDS: &[&str] = &[
        "select ",
        "insert ",
        "sqlite",
        "postgres",
        "diesel",
        "libpq",
        "r2d2",
        "locked",
        "disk",
        "i/o",
        "constraint",
        "relation",
        "connection refused",
        "timed out waiting",
        "panicked",
        ".rs:",
        "/",
        "\\",
    ];
    fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
            Value::Object(map) => map.iter().for_each(|(k, v)| {
                out.push(k);
                strings(v, out)
            }),
            _ => {}
        }
    }
    let mut all = Vec::new();
    strings(error, &mut all);
    all.iter().find_map(|s| {
        let lower = s.to_lowercase();
        WORDS.iter().find(|w| lower.contains(*w)).map(|w| format!("{w:?} in {s:?}"))
    })
}

/// What is wrong with an internal-failure error (§4: -32603, a request id, no internals), as a
/// list; `unavailable` asks for SERVICE_UNAVAILABLE with `retryable: true` and HTTP status 503.
pub(crate) fn internal_error_problems(error: &Value, unavailable: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let data = &error["data"];
    if error["code"] != json!(-32603) {
        problems.push("error.code is not -32603".to_string());
    }
    if unavailable {
        if data["code"] != "SERVICE_UNAVAILABLE" {
            problems.push("data.code is not SERVICE_UNAVAILABLE".into());
        }
        if data["retryable"] != json!(true) {
            problems.push("data.retryable is not true".into());
        }
        if data["httpStatus"] != json!(503) {
            problems.push("data.httpStatus is not 503".into());
        }
    } else if data["code"] != "SERVICE_UNAVAILABLE" && data["code"] != "INTERNAL_SERVER_ERROR" {
        problems.push("data.code is neither SERVICE_UNAVAILABLE nor INTERNAL_SERVER_ERROR".into());
    } else if data["code"] == "SERVICE_UNAVAILABLE" && data["retryable"] != json!(true) {
        problems.push("SERVICE_UNAVAILABLE without data.retryable true".into());
    }
    if data["requestId"].as_str().and_then(|id| Uuid::try_parse(id).ok()).is_none() {
        problems.push("no UUID in data.requestId".into());
    }
    if let Some(leak) = leak_in(error) {
        problems.push(format!("leaks internals: {leak}"));
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// What each logical call ended as, and the check of the database against it (shared)
// ---------------------------------------------------------------------------------------------

/// How a logical call (one title; with a key, all its retries) ended.
#[derive(Debug, Clone)]
pub(crate) enum Fate {
    /// Answered with a success carrying this id: stored exactly once, under this id.
    Created(String),
    /// Refused by an answer that means "not written" (validation, key reuse): never stored.
    Refused(String),
    /// Without a key and without a definite answer (transport failure, no answer, an error
    /// that may come after the commit): stored at most once.
    Unknown(String),
    /// With a key, and no definite answer before the test gave up: the test fails.
    Unresolved(String),
}

/// One logical call: its title (unique) and how it ended.
#[derive(Debug, Clone)]
pub(crate) struct Logical {
    pub title: String,
    pub fate: Fate,
}

/// Compares what was stored with what was answered: every answered success once under its id,
/// nothing for refused calls, at most one row for unknown ones, no row of an unknown title.
/// With `strict`, unknown calls must have no row either (SQLite errors come before the commit).
/// Returns the problems, and the unknown calls that left a row (what they had been answered).
pub(crate) fn check_stored(calls: &[Logical], rows: &[StoredRow], strict: bool) -> (Vec<String>, Vec<String>) {
    let mut by_title: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for row in rows {
        by_title.entry(row.title.as_str()).or_default().push(row.id.as_str());
    }
    let mut problems = Vec::new();
    let mut unknown_stored = Vec::new();
    let mut titles = BTreeSet::new();
    for call in calls {
        if !titles.insert(call.title.as_str()) {
            problems.push(format!("test bug: title {:?} used twice", call.title));
        }
        let stored = by_title.get(call.title.as_str()).cloned().unwrap_or_default();
        match &call.fate {
            Fate::Created(id) => {
                if stored != [id.as_str()] {
                    problems.push(format!(
                        "answered success {id} ({:?}) is stored as {stored:?}, not exactly once",
                        call.title
                    ));
                }
            }
            Fate::Refused(why) if !stored.is_empty() => {
                problems.push(format!("refused call {:?} ({why}) is stored: {stored:?}", call.title))
            }
            Fate::Unknown(why) => {
                if !stored.is_empty() {
                    unknown_stored.push(format!("{:?}: {why}", call.title));
                }
                if stored.len() > 1 || (strict && !stored.is_empty()) {
                    problems.push(format!(
                        "call {:?} without a definite answer ({why}) is stored as {stored:?}",
                        call.title
                    ));
                }
            }
            Fate::Unresolved(why) => {
                problems.push(format!("keyed call {:?} never got a definite answer: {why}", call.title))
            }
            Fate::Refused(_) => {}
        }
    }
    for (title, ids) in &by_title {
        if !titles.contains(title) {
            problems.push(format!("stored rows {ids:?} with title {title:?} belong to no call"));
        }
    }
    (problems, unknown_stored)
}

// ---------------------------------------------------------------------------------------------
// A load of creates during a fault
// ---------------------------------------------------------------------------------------------

/// One attempt of the load: when it started, how long it took, what it got.
#[derive(Debug, Clone)]
struct Attempt {
    started: Instant,
    elapsed: Duration,
    answer: Answer,
}

/// Workers that create without pause: most calls with an idempotency key (retried until a
/// definite answer), every fourth without (one attempt).
struct Load {
    stop: Arc<AtomicBool>,
    successes: Arc<AtomicUsize>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    workers: Vec<tokio::task::JoinHandle<Vec<Logical>>>,
}

impl Load {
    /// `accept_internal`: an INTERNAL_SERVER_ERROR counts as an error that may pass (disk
    /// faults), and keyed calls retry it; otherwise only SERVICE_UNAVAILABLE does.
    fn start(addr: SocketAddr, token: &str, workers: usize, tag: &str, accept_internal: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let successes = Arc::new(AtomicUsize::new(0));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let workers = (0..workers)
            .map(|w| {
                let (stop, successes, attempts) = (stop.clone(), successes.clone(), attempts.clone());
                let token = token.to_string();
                let tag = tag.to_string();
                tokio::spawn(async move {
                    let http = http_client();
                    let mut calls = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        i += 1;
                        let title = format!("{tag} w{w} #{i}");
                        let params = titled(&title);
                        let key = (i % 4 != 0).then(|| format!("{tag}-{w}-{i}-{}", Uuid::new_v4().simple()));
                        // Once stopped, a keyed call in progress still gets 30 s to come through.
                        let mut give_up: Option<Instant> = None;
                        let fate = loop {
                            let started = Instant::now();
                            let (answer, elapsed) = http_create(&http, addr, &token, &params, key.as_deref()).await;
                            attempts.lock().unwrap().push(Attempt { started, elapsed, answer: answer.clone() });
                            let passes = answer.is_retryable()
                                || (accept_internal
                                    && matches!(&answer, Answer::Error(e) if e["data"]["code"] == "INTERNAL_SERVER_ERROR"));
                            match (&answer, &key) {
                                (Answer::Created(_), _) => {
                                    successes.fetch_add(1, Ordering::SeqCst);
                                    break Fate::Created(answer.created_id().unwrap());
                                }
                                (_, None) if passes => break Fate::Unknown(format!("{answer:?}")),
                                (_, Some(_)) if passes => {
                                    if stop.load(Ordering::SeqCst) {
                                        let deadline = *give_up.get_or_insert_with(|| Instant::now() + Duration::from_secs(30));
                                        if Instant::now() > deadline {
                                            break Fate::Unresolved(format!("last answer {answer:?}"));
                                        }
                                    }
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                                // A wrong answer: recorded with the attempts and judged there.
                                _ => break Fate::Unknown(format!("wrong answer {answer:?}")),
                            }
                        };
                        calls.push(Logical { title, fate });
                    }
                    calls
                })
            })
            .collect();
        Self { stop, successes, attempts, workers }
    }

    /// Successes so far.
    fn successes(&self) -> usize {
        self.successes.load(Ordering::SeqCst)
    }

    /// Waits until `n` more successes than now, at most `timeout`; whether they came.
    async fn wait_for_successes(&self, n: usize, timeout: Duration) -> bool {
        let target = self.successes() + n;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.successes() >= target {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Stops the workers (keyed calls in progress get to finish); every logical call and attempt.
    async fn finish(self) -> (Vec<Logical>, Vec<Attempt>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut calls = Vec::new();
        for worker in self.workers {
            calls.extend(worker.await.unwrap());
        }
        let attempts = self.attempts.lock().unwrap().clone();
        (calls, attempts)
    }
}

/// Summary of a load's attempts: counts by outcome, the slowest, and every answer that breaks
/// the contract (wrong shape, a hang, anything but a success or an accepted error).
struct Judged {
    created: usize,
    unavailable: usize,
    internal: usize,
    transport: usize,
    slowest: Duration,
    problems: Vec<String>,
    request_ids: Vec<String>,
}

fn judge(attempts: &[Attempt], accept_internal: bool) -> Judged {
    let mut j = Judged {
        created: 0,
        unavailable: 0,
        internal: 0,
        transport: 0,
        slowest: Duration::ZERO,
        problems: Vec::new(),
        request_ids: Vec::new(),
    };
    for a in attempts {
        j.slowest = j.slowest.max(a.elapsed);
        match &a.answer {
            Answer::Created(_) => j.created += 1,
            Answer::Error(e) => {
                let unavailable = e["data"]["code"] == "SERVICE_UNAVAILABLE";
                if unavailable {
                    j.unavailable += 1;
                } else {
                    j.internal += 1;
                }
                let problems = internal_error_problems(e, !accept_internal);
                if !problems.is_empty() {
                    j.problems.push(format!("{}: {e}", problems.join("; ")));
                }
                if let Some(id) = e["data"]["requestId"].as_str() {
                    j.request_ids.push(id.to_string());
                }
            }
            Answer::Transport(why) => {
                j.transport += 1;
                j.problems.push(format!("the service dropped a call (it was not restarted): {why}"));
            }
            Answer::Hung => j.problems.push(format!("no answer within {CALL_BOUND:?} (a hang)")),
            Answer::Garbled(what) => j.problems.push(format!("not a JSON-RPC answer: {what}")),
        }
    }
    j
}

/// The first few of a list, for messages.
fn first<T: std::fmt::Debug>(items: &[T]) -> String {
    format!("{} in all, first: {:#?}", items.len(), &items[..items.len().min(5)])
}

/// The `database_reachable` gauge of `/metrics`.
async fn database_reachable(http: &reqwest::Client, addr: SocketAddr) -> Option<i64> {
    let text = http.get(format!("http://{addr}/metrics")).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix("database_reachable ")).and_then(|v| v.trim().parse().ok())
}

/// Starts the service binary (blocking start off the runtime).
async fn start_service(url: String, envs: &'static [(&'static str, &'static str)]) -> ServiceProcess {
    tokio::task::spawn_blocking(move || ServiceProcess::start(&url, envs)).await.unwrap()
}

/// Asserts the process is still the one that was started: it never exited.
fn assert_not_restarted(service: &mut ServiceProcess) {
    let status = service.child.try_wait().unwrap();
    assert!(status.is_none(), "the service exited ({status:?}); log:\n{}", service.log.lock().unwrap());
}

/// Polls `/ready` until it says `want`, at most `timeout`; the statuses seen (each answer within
/// [`CALL_BOUND`], or the test fails).
async fn ready_until(http: &reqwest::Client, addr: SocketAddr, want: u16, timeout: Duration) -> Vec<u16> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let status = ready(http, addr).await.unwrap_or_else(|e| panic!("/ready did not answer: {e}"));
        seen.push(status);
        if status == want || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL stopped and started again
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_under_load_fails_fast_and_recovers_without_restart() {
    const TEST: &str = "faults::postgres_stopped_under_load_fails_fast_and_recovers_without_restart";
    let t0 = Instant::now();
    let Some(pg) = tokio::task::spawn_blocking(|| PgInstance::for_test(TEST)).await.unwrap() else { return };
    let pg = Arc::new(pg);
    let mut service = start_service(pg.url(), &[("DATABASE_TIMEOUT", "1s")]).await;
    let addr = service.addr;
    let http = http_client();
    let (user, workspace) = (Uuid::new_v4(), Uuid::new_v4());
    let token = token_for(user, workspace);
    assert_eq!(ready(&http, addr).await, Ok(200), "ready before the fault");

    let load = Load::start(addr, &token, 8, "pg-stop", false);
    assert!(load.wait_for_successes(20, Duration::from_secs(30)).await, "no load before the fault");

    // Down: a fast shutdown ends the sessions and refuses new connections.
    let down_at = Instant::now();
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.stop(StopMode::Fast)).await.unwrap();
    let stopped_in = down_at.elapsed();
    let seen = ready_until(&http, addr, 503, Duration::from_secs(10)).await;
    assert_eq!(seen.last(), Some(&503), "/ready while PostgreSQL is down: {seen:?}");
    let during_down = load.successes();
    let reads_down = reads_while_down(&http, addr, &token).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let ready_down = ready(&http, addr).await;
    let reachable_down = database_reachable(&http, addr).await;
    let succeeded_while_down = load.successes() - during_down;

    // Up again, on the same port: the same process must serve again by itself.
    let up_at = Instant::now();
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.start()).await.unwrap();
    let seen_up = ready_until(&http, addr, 200, Duration::from_secs(30)).await;
    let ready_again_in = up_at.elapsed();
    let recovered = load.wait_for_successes(20, Duration::from_secs(30)).await;
    let reachable_up = database_reachable(&http, addr).await;
    let (calls, attempts) = load.finish().await;
    assert_not_restarted(&mut service);

    let down_window = |a: &Attempt| a.started >= down_at + stopped_in && a.started + a.elapsed < up_at;
    let in_window: Vec<Attempt> = attempts.iter().filter(|a| down_window(a)).cloned().collect();
    let j = judge(&attempts, false);
    let jw = judge(&in_window, false);
    let rows = tokio::task::spawn_blocking({
        let url = pg.url();
        move || stored_rows(&url)
    })
    .await
    .unwrap();
    let (problems, unknown_stored) = check_stored(&calls, &rows, false);
    let log = service.log.lock().unwrap().clone();
    let logged = j.request_ids.iter().filter(|id| log.contains(id.as_str())).count();
    eprintln!(
        "{TEST}: {} attempts ({} created, {} SERVICE_UNAVAILABLE, {} other errors, {} dropped), slowest {:?}; \
         while down: {} attempts, {} unavailable, slowest {:?}, {} successes (should be 0); /ready down {ready_down:?}, \
         503 after {} polls; back: /ready 200 after {ready_again_in:?} ({} polls); {} logical calls, {} rows, \
         {} unanswered calls stored {unknown_stored:?}; {logged}/{} request ids in the log; {:?} in all",
        attempts.len(),
        j.created,
        j.unavailable,
        j.internal,
        j.transport,
        j.slowest,
        in_window.len(),
        jw.unavailable,
        jw.slowest,
        succeeded_while_down,
        seen.len(),
        seen_up.len(),
        calls.len(),
        rows.len(),
        unknown_stored.len(),
        j.request_ids.len(),
        t0.elapsed()
    );

    assert!(j.problems.is_empty(), "answers that break the contract: {}\nservice log:\n{log}", first(&j.problems));
    assert!(jw.unavailable > 0, "no call failed while PostgreSQL was down: the fault was not exercised");
    assert_eq!(ready_down, Ok(503), "/ready while PostgreSQL is down");
    assert!(reads_down.is_empty(), "reads while PostgreSQL is down: {reads_down:#?}");
    // The pool may still hold (dead) idle connections; the metric that says whether the
    // database answers does not pretend.
    assert_eq!(reachable_down, Some(0), "/metrics database_reachable while PostgreSQL is down");
    assert_eq!(reachable_up, Some(1), "/metrics database_reachable once PostgreSQL is back");
    assert_eq!(seen_up.last(), Some(&200), "/ready after PostgreSQL is back: {seen_up:?}\n{log}");
    assert!(recovered, "creates did not succeed again after PostgreSQL came back; log:\n{log}");
    assert!(problems.is_empty(), "stored vs answered: {}", first(&problems));
    assert_eq!(logged, j.request_ids.len(), "every requestId of an error appears in the log");
}

/// What is wrong with the answers of the read methods while the database is down: each must be
/// SERVICE_UNAVAILABLE in §4's shape. A `since` past every position the service has seen must
/// be checked against the database (it may have been issued by another process meanwhile), so
/// it too is unavailable, not a params error.
async fn reads_while_down(http: &reqwest::Client, addr: SocketAddr, token: &str) -> Vec<String> {
    let reads = [
        ("opportunity.get", json!({"id": Uuid::new_v4()})),
        ("opportunity.list", json!({})),
        ("opportunity.changes", json!({})),
        ("opportunity.changes", json!({"since": "00000000900000000000"})),
    ];
    let mut problems = Vec::new();
    for (method, params) in reads {
        let sent = http
            .post(format!("http://{addr}/"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string())
            .send()
            .await;
        let answer: Value = match sent {
            Ok(response) => response.json().await.unwrap_or_else(|e| json!({"unreadable": e.to_string()})),
            Err(e) => json!({"transport": e.to_string()}),
        };
        let wrong = internal_error_problems(&answer["error"], true);
        if !wrong.is_empty() {
            problems.push(format!("{method} {params}: {wrong:?} in {answer}"));
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL frozen: connections open, nothing answers
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_frozen_under_load_does_not_hang_calls() {
    const TEST: &str = "faults::postgres_frozen_under_load_does_not_hang_calls";
    /// Longer than CALL_BOUND, so that a call that waits for the server shows as a hang.
    const FROZEN_FOR: Duration = Duration::from_secs(13);
    let t0 = Instant::now();
    let Some(pg) = tokio::task::spawn_blocking(|| PgInstance::for_test(TEST)).await.unwrap() else { return };
    let pg = Arc::new(pg);
    let mut service = start_service(pg.url(), &[("DATABASE_TIMEOUT", "1s")]).await;
    let addr = service.addr;
    let http = http_client();
    let token = token_for(Uuid::new_v4(), Uuid::new_v4());

    let load = Load::start(addr, &token, 6, "pg-freeze", false);
    assert!(load.wait_for_successes(20, Duration::from_secs(30)).await, "no load before the fault");
    let frozen_at = Instant::now();
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.freeze()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ready_frozen = {
        let started = Instant::now();
        (ready(&http, addr).await, started.elapsed())
    };
    tokio::time::sleep(FROZEN_FOR.saturating_sub(frozen_at.elapsed())).await;
    let thawed_at = Instant::now();
    let p = pg.clone();
    tokio::task::spawn_blocking(move || p.thaw()).await.unwrap();

    let seen_up = ready_until(&http, addr, 200, Duration::from_secs(30)).await;
    let recovered = load.wait_for_successes(10, Duration::from_secs(30)).await;
    let (calls, attempts) = load.finish().await;
    assert_not_restarted(&mut service);

    let during: Vec<Attempt> =
        attempts.iter().filter(|a| a.started >= frozen_at && a.started < thawed_at).cloned().collect();
    let j = judge(&attempts, false);
    let jd = judge(&during, false);
    let hangs = during.iter().filter(|a| matches!(a.answer, Answer::Hung)).count();
    let rows = tokio::task::spawn_blocking({
        let url = pg.url();
        move || stored_rows(&url)
    })
    .await
    .unwrap();
    let (problems, unknown_stored) = check_stored(&calls, &rows, false);
    let log = service.log.lock().unwrap().clone();
    eprintln!(
        "{TEST}: frozen {FROZEN_FOR:?}: {} attempts started meanwhile, {} SERVICE_UNAVAILABLE, {hangs} without an \
         answer within {CALL_BOUND:?}, slowest {:?}; /ready while frozen: {:?} after {:?}; after thaw /ready {:?}, \
         creates again: {recovered}; {} logical calls, {} rows, {} unanswered stored {unknown_stored:?}; {:?} in all",
        during.len(),
        jd.unavailable,
        jd.slowest,
        ready_frozen.0,
        ready_frozen.1,
        seen_up.last(),
        calls.len(),
        rows.len(),
        unknown_stored.len(),
        t0.elapsed()
    );

    assert_eq!(ready_frozen.0, Ok(503), "/ready while PostgreSQL is frozen");
    assert!(recovered, "creates did not succeed again after the thaw; log:\n{log}");
    assert!(problems.is_empty(), "stored vs answered: {}", first(&problems));
    assert!(
        j.problems.is_empty(),
        "while PostgreSQL is frozen, calls must come back with SERVICE_UNAVAILABLE within {CALL_BOUND:?} \
         (--database-timeout 1s): {}",
        first(&j.problems)
    );
}

// ---------------------------------------------------------------------------------------------
// Pool exhaustion: the only connection stuck behind a lock held from outside
// ---------------------------------------------------------------------------------------------

/// `n` concurrent keyed creates, each on a connection of its own; their params, keys and answers.
async fn burst(addr: SocketAddr, token: &str, tag: &str, n: usize) -> Vec<(Value, String, Answer, Duration)> {
    join_all((0..n).map(|i| {
        let token = token.to_string();
        let params = titled(&format!("{tag} {i}"));
        let key = format!("{tag}-{i}-{}", Uuid::new_v4().simple());
        async move {
            let (answer, elapsed) = http_create(&http_client(), addr, &token, &params, Some(&key)).await;
            (params, key, answer, elapsed)
        }
    }))
    .await
}

/// After the lock is gone: each burst call retried with its key creates exactly once.
async fn retry_burst(
    addr: SocketAddr,
    token: &str,
    burst: &[(Value, String, Answer, Duration)],
) -> Result<Vec<Logical>, String> {
    let http = http_client();
    let mut calls = Vec::new();
    for (params, key, first, _) in burst {
        let mut last = first.clone();
        let deadline = Instant::now() + Duration::from_secs(20);
        while last.created_id().is_none() {
            if Instant::now() > deadline {
                return Err(format!("{:?} still fails after the lock is gone: {last:?}", params["title"]));
            }
            last = http_create(&http, addr, token, params, Some(key)).await.0;
            if last.created_id().is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if let Some(id) = first.created_id() {
            assert_eq!(last.created_id(), Some(id), "a replay with the same key answers the same id");
        }
        calls.push(Logical {
            title: params["title"].as_str().unwrap().to_string(),
            fate: Fate::Created(last.created_id().unwrap()),
        });
    }
    Ok(calls)
}

/// Judges a burst against a held lock: every call SERVICE_UNAVAILABLE (retryable, §4 shape)
/// within the bound, all but the one that holds the connection after about the pool timeout.
fn judge_burst(burst: &[(Value, String, Answer, Duration)], pool_timeout: Duration) -> (Vec<String>, Vec<Duration>) {
    let mut problems = Vec::new();
    let mut times: Vec<Duration> = burst.iter().map(|b| b.3).collect();
    times.sort();
    for (params, _, answer, elapsed) in burst {
        match answer {
            Answer::Error(e) => {
                let p = internal_error_problems(e, true);
                if !p.is_empty() {
                    problems.push(format!("{}: {} after {elapsed:?}: {e}", params["title"], p.join("; ")));
                }
            }
            other => problems.push(format!("{}: {other:?} after {elapsed:?}", params["title"])),
        }
    }
    // All but one (the call that got the connection and waits on the lock) give up after about
    // the pool timeout; a generous margin for a loaded machine.
    let near = times.iter().filter(|t| **t < pool_timeout + Duration::from_millis(2500)).count();
    if near + 1 < times.len() {
        problems.push(format!(
            "only {near} of {} calls failed near the pool timeout {pool_timeout:?}: {times:?}",
            times.len()
        ));
    }
    (problems, times)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_pool_exhausted_by_a_held_write_lock_fails_fast_then_serves() {
    const TEST: &str = "faults::sqlite_pool_exhausted_by_a_held_write_lock_fails_fast_then_serves";
    const N: usize = 12;
    if !sqlite_pass_only(TEST) {
        return;
    }
    let t0 = Instant::now();
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("pool.db");
    let url = format!("sqlite://{}", path.display());
    let mut service = start_service(url.clone(), &[("DATABASE_POOL_SIZE", "1"), ("DATABASE_TIMEOUT", "500ms")]).await;
    let addr = service.addr;
    let http = http_client();
    let token = token_for(Uuid::new_v4(), Uuid::new_v4());
    let warmup = http_create(&http, addr, &token, &titled("sqlite pool warm-up"), None).await.0;
    let warm_id = warmup.created_id().unwrap_or_else(|| panic!("warm-up create: {warmup:?}"));

    // An outside writer takes the write lock and keeps it.
    let mut outside = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    outside.batch_execute("BEGIN IMMEDIATE").unwrap();
    let health =
        http.get(format!("http://{addr}/health")).send().await.map(|r| r.status().as_u16()).map_err(|e| e.to_string());
    let burst = burst(addr, &token, "sqlite pool", N).await;
    let ready_locked = ready(&http, addr).await;
    outside.batch_execute("ROLLBACK").unwrap();
    drop(outside);

    let (problems, times) = judge_burst(&burst, Duration::from_millis(500));
    let calls = retry_burst(addr, &token, &burst).await;
    let ready_after = ready(&http, addr).await;
    assert_not_restarted(&mut service);
    let rows = tokio::task::spawn_blocking({
        let url = url.clone();
        move || stored_rows(&url)
    })
    .await
    .unwrap();
    eprintln!(
        "{TEST}: {N} concurrent creates, pool of 1, timeout 500ms, write lock held outside: answers after {times:?} \
         ({:?}); /health {health:?}, /ready while locked {ready_locked:?}, after {ready_after:?}; {:?} in all",
        burst
            .iter()
            .map(|b| b
                .2
                .created_id()
                .map_or_else(|| format!("{:?}", b.2).chars().take(60).collect(), |_| "created".into()))
            .collect::<Vec<String>>(),
        t0.elapsed()
    );
    assert_eq!(health, Ok(200), "/health while the pool is exhausted");
    assert!(
        problems.is_empty(),
        "with the pool exhausted: {}\nlog:\n{}",
        first(&problems),
        service.log.lock().unwrap()
    );
    let mut calls = calls.unwrap_or_else(|e| panic!("after the lock is released: {e}"));
    calls.push(Logical { title: "sqlite pool warm-up".into(), fate: Fate::Created(warm_id) });
    let (stored_problems, _) = check_stored(&calls, &rows, true);
    assert!(stored_problems.is_empty(), "stored vs answered: {}", first(&stored_problems));
    assert_eq!(ready_after, Ok(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_pool_exhausted_by_a_held_table_lock_fails_fast_then_serves() {
    const TEST: &str = "faults::postgres_pool_exhausted_by_a_held_table_lock_fails_fast_then_serves";
    const N: usize = 8;
    /// Longer than CALL_BOUND, so that a call waiting on the lock shows as a hang.
    const HELD_FOR: Duration = Duration::from_secs(13);
    let t0 = Instant::now();
    let Some(pg) = tokio::task::spawn_blocking(|| PgInstance::for_test(TEST)).await.unwrap() else { return };
    let pg = Arc::new(pg);
    let mut service = start_service(pg.url(), &[("DATABASE_POOL_SIZE", "1"), ("DATABASE_TIMEOUT", "500ms")]).await;
    let addr = service.addr;
    let http = http_client();
    let token = token_for(Uuid::new_v4(), Uuid::new_v4());
    let warmup = http_create(&http, addr, &token, &titled("pg pool warm-up"), None).await.0;
    let warm_id = warmup.created_id().unwrap_or_else(|| panic!("warm-up create: {warmup:?}"));

    // An outside session locks the table (as a migration or a long report might) and keeps it.
    let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
    let holder = {
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pg.connect();
            conn.batch_execute("BEGIN; LOCK TABLE opportunities IN ACCESS EXCLUSIVE MODE;").unwrap();
            locked_tx.send(()).unwrap();
            std::thread::sleep(HELD_FOR);
            conn.batch_execute("COMMIT").unwrap();
        })
    };
    locked_rx.await.unwrap();
    let burst = burst(addr, &token, "pg pool", N).await;
    let ready_locked = ready(&http, addr).await;
    holder.await.unwrap();

    let (problems, times) = judge_burst(&burst, Duration::from_millis(500));
    let calls = retry_burst(addr, &token, &burst).await;
    assert_not_restarted(&mut service);
    let rows = tokio::task::spawn_blocking({
        let url = pg.url();
        move || stored_rows(&url)
    })
    .await
    .unwrap();
    eprintln!(
        "{TEST}: {N} concurrent creates, pool of 1, timeout 500ms, table locked outside for {HELD_FOR:?}: answers \
         after {times:?}; /ready while locked {ready_locked:?}; {:?} in all",
        t0.elapsed()
    );
    let mut calls = calls.unwrap_or_else(|e| panic!("after the lock is released: {e}"));
    calls.push(Logical { title: "pg pool warm-up".into(), fate: Fate::Created(warm_id) });
    let (stored_problems, _) = check_stored(&calls, &rows, false);
    assert!(stored_problems.is_empty(), "stored vs answered: {}", first(&stored_problems));
    assert!(
        problems.is_empty(),
        "with the only connection waiting on a lock, calls must come back with SERVICE_UNAVAILABLE within \
         {CALL_BOUND:?}: {}",
        first(&problems)
    );
}

// ---------------------------------------------------------------------------------------------
// SQLite: the database read-only, the disk full
// ---------------------------------------------------------------------------------------------

/// A root-only tool that is missing or refused: a failure in CI, a clear skip elsewhere.
fn unavailable_tool(test: &str, what: &str) {
    assert!(!in_ci(), "{test}: {what}");
    eprintln!("{test}: skipped: {what}");
}

/// `chattr +i` on files, undone on drop (an immutable file cannot be removed, not even by root).
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(files: &[PathBuf]) -> Result<Self, String> {
        let guard = Self(files.to_vec());
        for file in files {
            let out = Command::new("chattr").arg("+i").arg(file).output().map_err(|e| format!("chattr: {e}"))?;
            if !out.status.success() {
                return Err(format!("chattr +i {}: {}", file.display(), String::from_utf8_lossy(&out.stderr).trim()));
            }
        }
        Ok(guard)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for file in &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(file).status();
        }
    }
}

/// A small tmpfs mounted on a temporary folder, unmounted on drop.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Self, String> {
        let dir = TempDir::new().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Fills the file system of `path` with a file until it is full; the file.
fn fill_disk(dir: &Path) -> PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
    filler
}

/// A SQLite database file under a fault: a load of creates runs through it, and once the fault
/// is lifted the same process must create again; nothing answered may be lost, nothing refused
/// may be stored. `fault` applies the fault and returns what lifts it.
async fn sqlite_fault_under_load<F, L>(test: &str, dir: &Path, fault: F)
where
    F: FnOnce(&Path) -> L,
{
    let t0 = Instant::now();
    let path = dir.join("fault.db");
    let url = format!("sqlite://{}", path.display());
    let mut service = start_service(url.clone(), &[("DATABASE_TIMEOUT", "1s")]).await;
    let addr = service.addr;
    let http = http_client();
    let token = token_for(Uuid::new_v4(), Uuid::new_v4());

    let load = Load::start(addr, &token, 4, "sqlite-fault", true);
    assert!(load.wait_for_successes(10, Duration::from_secs(30)).await, "no load before the fault");
    let fault_at = Instant::now();
    let lift = fault(&path);
    // Until calls fail (a few creates may still fit), then a few seconds more.
    let mut failing_since = None;
    let fault_deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < fault_deadline {
        let failed =
            load.attempts.lock().unwrap().iter().any(|a| a.started >= fault_at && matches!(a.answer, Answer::Error(_)));
        if failed && failing_since.is_none() {
            failing_since = Some(Instant::now());
        }
        if failing_since.is_some_and(|t| t.elapsed() > Duration::from_secs(3)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready_faulty = ready(&http, addr).await;
    let successes_before_lift = load.successes();
    let lifted_at = Instant::now();
    drop(lift);
    let recovered = load.wait_for_successes(20, Duration::from_secs(30)).await;
    let (calls, attempts) = load.finish().await;
    assert_not_restarted(&mut service);

    let during: Vec<Attempt> =
        attempts.iter().filter(|a| a.started >= fault_at && a.started < lifted_at).cloned().collect();
    let j = judge(&attempts, true);
    let jd = judge(&during, true);
    let log = service.log.lock().unwrap().clone();
    let example = during.iter().find_map(|a| match &a.answer {
        Answer::Error(e) => Some(e.clone()),
        _ => None,
    });
    // Afterwards: kill -9, and read the file fresh.
    service.signal("KILL");
    let _ = tokio::task::spawn_blocking(move || service.wait(Duration::from_secs(10))).await;
    let (rows, integrity) = tokio::task::spawn_blocking({
        let path = path.clone();
        let url = url.clone();
        move || {
            #[derive(diesel::QueryableByName)]
            struct Check {
                #[diesel(sql_type = diesel::sql_types::Text)]
                integrity_check: String,
            }
            let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
            let check = diesel::RunQueryDsl::load::<Check>(diesel::sql_query("PRAGMA integrity_check"), &mut conn)
                .unwrap()
                .into_iter()
                .map(|c| c.integrity_check)
                .collect::<Vec<_>>()
                .join("; ");
            (stored_rows(&url), check)
        }
    })
    .await
    .unwrap();
    let (problems, _) = check_stored(&calls, &rows, true);
    let example_log = example
        .as_ref()
        .and_then(|e| e["data"]["requestId"].as_str())
        .and_then(|id| log.lines().find(|l| l.contains(id)))
        .unwrap_or("none");
    eprintln!("{test}: the log line of the example: {example_log}");
    eprintln!(
        "{test}: during the fault: {} attempts, {} created (fitted before it bit), {} SERVICE_UNAVAILABLE, {} \
         INTERNAL_SERVER_ERROR, slowest {:?}; example: {}; /ready during the fault {ready_faulty:?}; \
         {successes_before_lift} successes before the lift, creates again after it: {recovered}; {} logical calls, \
         {} rows, integrity {integrity:?}; {:?} in all",
        during.len(),
        jd.created,
        jd.unavailable,
        jd.internal,
        jd.slowest,
        example.as_ref().map_or("none".to_string(), Value::to_string),
        calls.len(),
        rows.len(),
        t0.elapsed()
    );
    let cause_logged =
        ["full", "readonly", "read-only", "i/o", "permission"].iter().any(|w| log.to_lowercase().contains(w));
    assert!(jd.unavailable + jd.internal > 0, "no call failed: the fault was not exercised");
    assert!(j.problems.is_empty(), "answers that break the contract: {}\nlog:\n{log}", first(&j.problems));
    assert!(recovered, "creates did not succeed again once the fault was lifted; log:\n{log}");
    assert!(problems.is_empty(), "stored vs answered: {}", first(&problems));
    assert_eq!(integrity, "ok");
    assert!(cause_logged, "the log names the cause of the failures:\n{log}");
    let unlogged: Vec<&String> = j.request_ids.iter().filter(|id| !log.contains(id.as_str())).collect();
    assert!(unlogged.is_empty(), "requestIds of errors missing from the log: {}", first(&unlogged));
}

/// Read-only database. As root, file modes do not stop writes (chmod 0444 changes nothing), a
/// read-only remount is refused while the service holds the file open for writing, and a
/// read-only bind mount does not affect descriptors already open. `chattr +i` does: ext4 refuses
/// writes through descriptors that are already open (EPERM), so the running service really
/// cannot write. The `-shm` file is left alone (it is shared memory, written through a mapping).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_database_made_read_only_fails_cleanly_and_serves_again() {
    const TEST: &str = "faults::sqlite_database_made_read_only_fails_cleanly_and_serves_again";
    if !sqlite_pass_only(TEST) {
        return;
    }
    let dir = TempDir::new().unwrap();
    // Probe: can this file system and user make a file immutable?
    let probe = dir.path().join("probe");
    std::fs::write(&probe, b"x").unwrap();
    if let Err(e) = Immutable::set(std::slice::from_ref(&probe)) {
        return unavailable_tool(TEST, &format!("cannot make a file immutable here ({e}); needs root on ext4/xfs"));
    }
    sqlite_fault_under_load(TEST, dir.path(), |db| {
        let wal = PathBuf::from(format!("{}-wal", db.display()));
        Immutable::set(&[db.to_path_buf(), wal]).unwrap()
    })
    .await;
}

/// Disk full: the database lives on a 32 MiB tmpfs that a filler file fills up; removing the
/// filler lifts the fault. The file system must hold SQLite's write-ahead log at its full size
/// (it is checkpointed at 1,000 pages, 4 MiB) besides the database: on a 4 MiB one the log
/// filled the disk again soon after the lift, and no create could succeed again. (`PRAGMA max_page_count` would not do: it is a setting of the one
/// connection that sets it, not of the file.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_disk_full_fails_cleanly_and_serves_again() {
    const TEST: &str = "faults::sqlite_disk_full_fails_cleanly_and_serves_again";
    if !sqlite_pass_only(TEST) {
        return;
    }
    let tmpfs = match Tmpfs::mount("32m") {
        Ok(t) => t,
        Err(e) => return unavailable_tool(TEST, &format!("cannot mount a small tmpfs ({e}); needs root")),
    };
    sqlite_fault_under_load(TEST, tmpfs.path(), |db| {
        struct Filler(PathBuf);
        impl Drop for Filler {
            fn drop(&mut self) {
                std::fs::remove_file(&self.0).unwrap();
            }
        }
        Filler(fill_disk(db.parent().unwrap()))
    })
    .await;
}

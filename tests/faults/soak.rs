//! Load soak (issue 4, item 5): a bounded run (about half a minute, loopback only) of mixed
//! creates from 32 concurrent clients (24 over HTTP, 8 over WebSocket), with the database or the
//! service restarted twice in the middle, then a check of the database: every answered success
//! is stored exactly once, and nothing else is.
//!
//! The mix, per logical call (each with a title of its own, so that every row can be traced):
//! valid creates with an idempotency key (header or params field; some replayed on purpose after
//! their success, which must answer the same id), valid creates without a key, invalid params
//! (-32602, never stored), and an earlier key reused with other params (CONFLICT, never stored).
//! A call with a key that fails at transport level, without an answer, or with a retryable error
//! is retried with the same key until it gets a definite answer. A call without a key is sent
//! once: when it gets no definite answer, it may be stored at most once (the client cannot know).
//!
//! - PostgreSQL (an instance of the test's own): an immediate shutdown (like a crash) and later a
//!   fast shutdown, each followed by a start, while the same service process keeps running.
//! - SQLite: the service process is stopped with SIGTERM and later killed with SIGKILL, and each
//!   time started again on the same address.
//!
//! Both run in the SQLite pass only (see [`crate::pg_instance::sqlite_pass_only`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jsonrpsee::core::ClientError;
use jsonrpsee::ws_client::{HeaderMap, HeaderValue, WsClient, WsClientBuilder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tempfile::TempDir;
use uuid::Uuid;

use crate::faults::{
    Answer, CALL_BOUND, Fate, Logical, check_stored, http_client, http_create, internal_error_problems, parse_answer,
    titled, token_for,
};
use crate::helpers::*;
use crate::pg_instance::{PgInstance, StopMode, sqlite_pass_only, stored_rows};

const HTTP_CLIENTS: usize = 24;
const WS_CLIENTS: usize = 8;
/// How long the clients start new calls.
const RUN_FOR: Duration = Duration::from_secs(24);
/// When the two faults strike, from the start of the run.
const FAULTS_AT: [Duration; 2] = [Duration::from_secs(8), Duration::from_secs(16)];
/// After the run, how long a keyed call may keep retrying for its definite answer.
const DRAIN_FOR: Duration = Duration::from_secs(30);

/// One client's connection: an HTTP client, or a WebSocket that is opened again when it drops.
enum Link {
    Http(reqwest::Client),
    Ws(Option<WsClient>),
}

impl Link {
    /// One `opportunity.create`: the key goes in the params field on a WebSocket, and on HTTP in
    /// the header unless `key_in_field`.
    async fn create(
        &mut self,
        addr: SocketAddr,
        token: &str,
        params: &Value,
        key: Option<&str>,
        key_in_field: bool,
        tally: &mut Tally,
    ) -> (Answer, Duration) {
        let started = Instant::now();
        let mut params = params.clone();
        let answer = match self {
            Link::Http(http) => {
                let header = match key {
                    Some(k) if key_in_field => {
                        params["idempotencyKey"] = json!(k);
                        None
                    }
                    other => other,
                };
                return http_create(http, addr, token, &params, header).await;
            }
            Link::Ws(slot) => {
                if let Some(k) = key {
                    params["idempotencyKey"] = json!(k);
                }
                if slot.as_ref().is_none_or(|c| !c.is_connected()) {
                    tally.ws_connects += 1;
                    let mut headers = HeaderMap::new();
                    headers.insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
                    *slot = WsClientBuilder::default()
                        .set_headers(headers)
                        .request_timeout(CALL_BOUND)
                        .connection_timeout(CALL_BOUND)
                        .build(format!("ws://{addr}/"))
                        .await
                        .ok();
                }
                match slot.as_ref() {
                    None => Answer::Transport("the WebSocket did not connect".into()),
                    Some(client) => match ws_create(client, &params).await {
                        Ok(result) => parse_answer(200, &json!({ "result": result }).to_string()),
                        Err(ClientError::Call(e)) => Answer::Error(serde_json::to_value(&e).unwrap()),
                        Err(ClientError::RequestTimeout) => Answer::Hung,
                        Err(other) => {
                            *slot = None;
                            Answer::Transport(other.to_string())
                        }
                    },
                }
            }
        };
        (answer, started.elapsed())
    }
}

/// Counts of one client, summed over all.
#[derive(Debug, Default)]
struct Tally {
    attempts: usize,
    retries: usize,
    created: usize,
    unavailable: usize,
    transport: usize,
    no_answer: usize,
    invalid_refused: usize,
    reuse_refused: usize,
    replays: usize,
    ws_connects: usize,
    slowest: Duration,
    /// Answers that break the contract.
    wrong: Vec<String>,
    /// When the run started, so that a hang says when it was sent (beside the faults' times).
    run_start: Option<Instant>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.attempts += other.attempts;
        self.retries += other.retries;
        self.created += other.created;
        self.unavailable += other.unavailable;
        self.transport += other.transport;
        self.no_answer += other.no_answer;
        self.invalid_refused += other.invalid_refused;
        self.reuse_refused += other.reuse_refused;
        self.replays += other.replays;
        self.ws_connects += other.ws_connects;
        self.slowest = self.slowest.max(other.slowest);
        self.wrong.extend(other.wrong);
    }

    /// Counts one attempt; notes a hang or a malformed error as wrong.
    fn count(&mut self, what: &str, answer: &Answer, elapsed: Duration) {
        self.attempts += 1;
        self.slowest = self.slowest.max(elapsed);
        match answer {
            Answer::Created(_) => {}
            Answer::Error(e) if e["data"]["code"] == "SERVICE_UNAVAILABLE" => {
                self.unavailable += 1;
                let problems = internal_error_problems(e, true);
                if !problems.is_empty() {
                    self.wrong.push(format!("{what}: {}: {e}", problems.join("; ")));
                }
            }
            Answer::Error(_) => {}
            Answer::Transport(_) => self.transport += 1,
            Answer::Hung => {
                self.no_answer += 1;
                let sent = self.run_start.map_or(String::new(), |start| {
                    format!(", sent {:.2?} into the run", (Instant::now() - elapsed).saturating_duration_since(start))
                });
                self.wrong.push(format!("{what}: no answer within {CALL_BOUND:?}{sent}"));
            }
            Answer::Garbled(text) => self.wrong.push(format!("{what}: not a JSON-RPC answer: {text}")),
        }
    }
}

/// Params that break one rule or another (each must be refused with -32602); the title stays,
/// so that a row stored by mistake would be found.
fn invalid_params(variant: u32, title: &str) -> Value {
    let mut p = titled(title);
    match variant % 8 {
        0 => p["probability"] = json!(101),
        1 => p["pipeline_type"] = json!("retrofit"),
        2 => p["estimatedValue"] = json!(1.005),
        3 => {
            p["stage"] = json!("won");
            p["probability"] = json!(50);
        }
        4 => {
            p.as_object_mut().unwrap().remove("customerId");
        }
        5 => p["customerId"] = json!("not-a-uuid"),
        6 => p["expectedCloseDate"] = json!("2026-12-01"),
        _ => p["solutionFamilies"] = json!(["HVAC", "HVAC"]),
    }
    p
}

/// Whether an answer is a §4 error with this code and name.
fn is_error(answer: &Answer, code: i64, name: &str) -> bool {
    matches!(answer, Answer::Error(e) if e["code"] == json!(code) && e["data"]["code"] == name)
}

/// Sends one logical call until it has a definite answer: retried with the same key while the
/// answer is retryable, until `give_up` (set once the run stops).
#[allow(clippy::too_many_arguments)]
async fn until_definite(
    link: &mut Link,
    addr: SocketAddr,
    token: &str,
    params: &Value,
    key: Option<&str>,
    key_in_field: bool,
    stop: &AtomicBool,
    tally: &mut Tally,
) -> Result<Answer, Answer> {
    let mut give_up: Option<Instant> = None;
    let what = params["title"].as_str().unwrap_or("untitled").to_string();
    loop {
        let (answer, elapsed) = link.create(addr, token, params, key, key_in_field, tally).await;
        tally.count(&what, &answer, elapsed);
        if !answer.is_retryable() {
            return Ok(answer);
        }
        if stop.load(Ordering::SeqCst) {
            let deadline = *give_up.get_or_insert_with(|| Instant::now() + DRAIN_FOR);
            if Instant::now() > deadline {
                return Err(answer);
            }
        }
        tally.retries += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One client: logical calls of every kind until `stop`; what each ended as, and the counts.
async fn client(
    n: usize,
    mut link: Link,
    addr: SocketAddr,
    token: String,
    stop: Arc<AtomicBool>,
    run_start: Instant,
) -> (Vec<Logical>, Tally) {
    let mut rng = StdRng::seed_from_u64(0x50a6 + n as u64);
    let mut tally = Tally { run_start: Some(run_start), ..Tally::default() };
    let mut calls = Vec::new();
    // Keys that created, with their params, for replays and reuses.
    let mut used_keys: Vec<(String, Value)> = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let roll = rng.random_range(0..100);
        let key_in_field = rng.random_bool(0.3);
        let title = format!("soak c{n} #{i}");
        let ctx = format!("{title} (roll {roll})");
        let fate = if roll < 55 || (roll >= 90 && used_keys.is_empty()) {
            // A valid create with a key, retried until definite; sometimes replayed.
            let params = titled(&title);
            let key = format!("soak-{n}-{i}-{}", Uuid::new_v4().simple());
            match until_definite(&mut link, addr, &token, &params, Some(&key), key_in_field, &stop, &mut tally).await {
                Ok(answer) => match answer.created_id() {
                    Some(id) => {
                        tally.created += 1;
                        if rng.random_bool(0.25) {
                            tally.replays += 1;
                            let replay = until_definite(
                                &mut link,
                                addr,
                                &token,
                                &params,
                                Some(&key),
                                !key_in_field,
                                &stop,
                                &mut tally,
                            )
                            .await;
                            match replay.as_ref().map(Answer::created_id) {
                                Ok(Some(again)) if again == id => {}
                                _ => tally.wrong.push(format!("{ctx}: replay of {id} answered {replay:?}")),
                            }
                        }
                        used_keys.push((key, params));
                        Fate::Created(id)
                    }
                    None => {
                        tally.wrong.push(format!("{ctx}: a valid keyed create answered {answer:?}"));
                        Fate::Unknown(format!("wrong answer {answer:?}"))
                    }
                },
                Err(last) => Fate::Unresolved(format!("last answer {last:?}")),
            }
        } else if roll < 75 {
            // A valid create without a key: sent once.
            let params = titled(&title);
            let (answer, elapsed) = link.create(addr, &token, &params, None, false, &mut tally).await;
            tally.count(&ctx, &answer, elapsed);
            match answer.created_id() {
                Some(id) => {
                    tally.created += 1;
                    Fate::Created(id)
                }
                None if answer.is_retryable() => {
                    let what = match &answer {
                        Answer::Error(e) => {
                            format!("{} requestId={}", e["data"]["code"], e["data"]["requestId"].as_str().unwrap_or(""))
                        }
                        other => format!("{other:?}"),
                    };
                    Fate::Unknown(format!("at {:.1?}: {what}", run_start.elapsed()))
                }
                None => {
                    tally.wrong.push(format!("{ctx}: a valid create without a key answered {answer:?}"));
                    Fate::Unknown(format!("wrong answer {answer:?}"))
                }
            }
        } else if roll < 90 {
            // Invalid params, with or without a key: always -32602, never stored.
            let params = invalid_params(rng.random_range(0..8), &title);
            let key = rng.random_bool(0.5).then(|| format!("soak-bad-{n}-{i}"));
            match until_definite(&mut link, addr, &token, &params, key.as_deref(), key_in_field, &stop, &mut tally)
                .await
            {
                Ok(answer) if is_error(&answer, -32602, "BAD_REQUEST") => {
                    tally.invalid_refused += 1;
                    Fate::Refused("invalid params".into())
                }
                Ok(answer) => {
                    tally.wrong.push(format!("{ctx}: invalid params {params} answered {answer:?}"));
                    Fate::Refused(format!("wrong answer {answer:?}"))
                }
                Err(last) => Fate::Unresolved(format!("invalid params, last answer {last:?}")),
            }
        } else {
            // An earlier key with other params: CONFLICT idempotency_key_reused, never stored.
            let (key, _) = used_keys[rng.random_range(0..used_keys.len())].clone();
            let params = titled(&title);
            match until_definite(&mut link, addr, &token, &params, Some(&key), key_in_field, &stop, &mut tally).await {
                Ok(Answer::Error(e))
                    if e["code"] == json!(-32009) && e["data"]["reason"] == "idempotency_key_reused" =>
                {
                    tally.reuse_refused += 1;
                    Fate::Refused("key reused".into())
                }
                Ok(answer) => {
                    tally.wrong.push(format!("{ctx}: key {key} reused with other params answered {answer:?}"));
                    Fate::Refused(format!("wrong answer {answer:?}"))
                }
                Err(last) => Fate::Unresolved(format!("key reuse, last answer {last:?}")),
            }
        };
        calls.push(Logical { title, fate });
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..15))).await;
    }
    (calls, tally)
}

/// Runs the clients against `addr` for [`RUN_FOR`], calling `fault(k)` at each of [`FAULTS_AT`];
/// then lets them drain. Every logical call and the summed counts.
async fn soak<F, Fut>(addr: SocketAddr, token: &str, mut fault: F) -> (Vec<Logical>, Tally, Vec<String>)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients: Vec<_> = (0..HTTP_CLIENTS + WS_CLIENTS)
        .map(|n| {
            let link = if n < HTTP_CLIENTS { Link::Http(http_client()) } else { Link::Ws(None) };
            tokio::spawn(client(n, link, addr, token.to_string(), stop.clone(), started))
        })
        .collect();
    let mut events = Vec::new();
    for (k, at) in FAULTS_AT.iter().enumerate() {
        tokio::time::sleep(at.saturating_sub(started.elapsed())).await;
        let t = started.elapsed();
        let what = fault(k).await;
        events.push(format!("{what} at {t:.1?} (took {:.1?})", started.elapsed() - t));
    }
    tokio::time::sleep(RUN_FOR.saturating_sub(started.elapsed())).await;
    stop.store(true, Ordering::SeqCst);
    let mut calls = Vec::new();
    let mut tally = Tally::default();
    for c in clients {
        let (c_calls, c_tally) = c.await.unwrap();
        calls.extend(c_calls);
        tally.add(c_tally);
    }
    events.push(format!("drained at {:.1?}", started.elapsed()));
    (calls, tally, events)
}

/// Asserts the outcome of a soak: no wrong answer, no hang, a felt fault, real work done, and
/// the database holding every answered success exactly once and nothing else.
fn judge_soak(
    test: &str,
    calls: &[Logical],
    tally: &Tally,
    rows: &[crate::pg_instance::StoredRow],
    events: &[String],
    t0: Instant,
    log: &str,
) {
    let (problems, unknown_stored) = check_stored(calls, rows, false);
    let unknown = calls.iter().filter(|c| matches!(c.fate, Fate::Unknown(_))).count();
    // What the service logged about the calls that failed but were stored all the same.
    for what in &unknown_stored {
        if let Some(id) = what.split("requestId=").nth(1).map(|r| r.trim_end_matches('"'))
            && !id.is_empty()
        {
            for line in log.lines().filter(|l| l.contains(id)) {
                eprintln!("{test}: stored despite an error: {what}; log: {line}");
            }
        }
    }
    let created = calls.iter().filter(|c| matches!(c.fate, Fate::Created(_))).count();
    eprintln!(
        "{test}: {} logical calls ({created} created, {} invalid refused, {} key reuses refused, {unknown} without a \
         definite answer of which {} stored: {unknown_stored:?}), {} attempts, {} retries, {} replays, {} SERVICE_UNAVAILABLE, \
         {} transport failures, {} hangs, {} WebSocket connects, slowest {:?}; {} rows; events: {events:?}; {:?} in all",
        calls.len(),
        tally.invalid_refused,
        tally.reuse_refused,
        unknown_stored.len(),
        tally.attempts,
        tally.retries,
        tally.replays,
        tally.unavailable,
        tally.transport,
        tally.no_answer,
        tally.ws_connects,
        tally.slowest,
        rows.len(),
        t0.elapsed()
    );
    assert!(
        tally.wrong.is_empty(),
        "answers that break the contract: {} in all, first: {:#?}",
        tally.wrong.len(),
        &tally.wrong[..tally.wrong.len().min(8)]
    );
    assert!(
        problems.is_empty(),
        "stored vs answered: {} in all, first: {:#?}",
        problems.len(),
        &problems[..problems.len().min(8)]
    );
    assert!(tally.unavailable + tally.transport > 0, "no call felt the faults");
    assert!(created >= 200, "too little work to call this a soak: {created} creates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_on_postgres_with_two_database_restarts() {
    const TEST: &str = "soak::soak_on_postgres_with_two_database_restarts";
    let t0 = Instant::now();
    let Some(pg) = tokio::task::spawn_blocking(|| PgInstance::for_test(TEST)).await.unwrap() else { return };
    let pg = Arc::new(pg);
    let url = pg.url();
    let service =
        tokio::task::spawn_blocking(move || ServiceProcess::start(&url, &[("DATABASE_TIMEOUT", "1s")])).await.unwrap();
    let token = token_for(Uuid::new_v4(), Uuid::new_v4());

    let (calls, tally, events) = soak(service.addr, &token, |k| {
        let pg = pg.clone();
        async move {
            let mode = if k == 0 { StopMode::Immediate } else { StopMode::Fast };
            tokio::task::spawn_blocking(move || {
                pg.stop(mode);
                std::thread::sleep(Duration::from_secs(2));
                pg.start();
            })
            .await
            .unwrap();
            format!("PostgreSQL {mode:?} stop, 2 s down, start")
        }
    })
    .await;
    let rows = tokio::task::spawn_blocking({
        let url = pg.url();
        move || stored_rows(&url)
    })
    .await
    .unwrap();
    let mut service = service;
    let exited = service.child.try_wait().unwrap();
    let log = service.log.lock().unwrap().clone();
    assert!(exited.is_none(), "the service exited: {exited:?}\n{log}");
    judge_soak(TEST, &calls, &tally, &rows, &events, t0, &log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_on_sqlite_with_sigterm_and_sigkill_restarts() {
    const TEST: &str = "soak::soak_on_sqlite_with_sigterm_and_sigkill_restarts";
    if !sqlite_pass_only(TEST) {
        return;
    }
    let t0 = Instant::now();
    let dir = TempDir::new().unwrap();
    let url = format!("sqlite://{}", dir.path().join("soak.db").display());
    let service = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || ServiceProcess::start(&url, &[])).await.unwrap()
    };
    let addr = service.addr;
    let service = Arc::new(std::sync::Mutex::new(Some(service)));
    let token = token_for(Uuid::new_v4(), Uuid::new_v4());

    let (calls, tally, events) = soak(addr, &token, |k| {
        let (service, url) = (service.clone(), url.clone());
        async move {
            let signal = if k == 0 { "TERM" } else { "KILL" };
            tokio::task::spawn_blocking(move || {
                let mut slot = service.lock().unwrap();
                let mut old = slot.take().unwrap();
                old.signal(signal);
                let status = old.wait(Duration::from_secs(15));
                let log = old.log.lock().unwrap().clone();
                match signal {
                    "TERM" => assert!(
                        status.is_some_and(|s| s.success()),
                        "SIGTERM under load must exit 0 within 15 s, got {status:?}; log:\n{log}"
                    ),
                    _ => assert!(status.is_some(), "no exit after SIGKILL"),
                }
                drop(old);
                let listen = addr.to_string();
                *slot = Some(ServiceProcess::start(&url, &[("LISTEN_ADDR", listen.as_str())]));
                format!("SIG{signal} ({status:?}), started again")
            })
            .await
            .unwrap()
        }
    })
    .await;
    let rows = tokio::task::spawn_blocking(move || stored_rows(&url)).await.unwrap();
    judge_soak(TEST, &calls, &tally, &rows, &events, t0, "");
}

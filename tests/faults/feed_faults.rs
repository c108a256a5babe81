//! The change feed under faults (CONTRACT.md §9), with the service binary as a process on the
//! backend of the run (SQLite, or PostgreSQL when `TEST_DATABASE_URL` is set):
//!
//! - `kill -9` in the middle of keyed creates from several tasks, a restart on the same database
//!   and address, and WebSocket subscribers that resume with `since` = the last `eventId` they
//!   got: every create answered with success reaches every subscriber exactly once, in one
//!   increasing order, with no gap and no repeat across the restart;
//! - 100 WebSocket subscribers that never read while creates run: the service's memory stays
//!   bounded, and an ordinary caller (HTTP calls, a subscriber that reads) is still served.
//!
//! - the same with large opportunities (about 50 KiB an event), and with subscriptions that
//!   replay thousands of stored events to connections that never read.
//!
//! Loopback only; each test is bounded in time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonrpsee::core::client::{Subscription, SubscriptionClientT, SubscriptionCloseReason};
use jsonrpsee::core::params::ObjectParams;
use jsonrpsee::ws_client::{HeaderMap, WsClient, WsClientBuilder};
use opportunity_service::auth::ALL_SCOPES;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use uuid::Uuid;

use crate::faults::{Answer, http_client, http_create};
use crate::helpers::*;

/// Each test's bound, start-up and restart of the service included.
const WITHIN: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Helpers of this file
// ---------------------------------------------------------------------------------------------

/// Starts the binary on `url` (port 0 unless `envs` names `LISTEN_ADDR`).
async fn start(url: &str, envs: Vec<(&'static str, String)>) -> ServiceProcess {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        ServiceProcess::start(&url, &envs)
    })
    .await
    .unwrap()
}

/// One JSON-RPC call over HTTP; the `result`, or the whole answer as the error.
async fn call(
    http: &reqwest::Client,
    addr: SocketAddr,
    token: &str,
    method: &str,
    params: Value,
) -> Result<Value, String> {
    let response = http
        .post(format!("http://{addr}/"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(request(json!(1), method, params).to_string())
        .send()
        .await
        .map_err(|e| format!("{method}: {e}"))?;
    let answer: Value = response.json().await.map_err(|e| format!("{method}: {e}"))?;
    match answer.get("result") {
        Some(result) if answer.get("error").is_none() => Ok(result.clone()),
        _ => Err(format!("{method}: {answer}")),
    }
}

/// Every event after `since` that `token`'s workspace reads, paged with `opportunity.changes`.
async fn whole_feed(http: &reqwest::Client, addr: SocketAddr, token: &str, since: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut since = since.to_string();
    loop {
        let page = call(http, addr, token, "opportunity.changes", json!({"since": since, "limit": 1000}))
            .await
            .unwrap_or_else(|e| panic!("reading the feed: {e}"));
        let events = page["events"].as_array().unwrap().clone();
        if events.is_empty() {
            return all;
        }
        since = page["nextSince"].as_str().unwrap().to_string();
        all.extend(events);
    }
}

fn event_id(event: &Value) -> String {
    event["eventId"].as_str().unwrap_or_else(|| panic!("an event without eventId: {event}")).to_string()
}

/// A jsonrpsee WebSocket client on `addr` with `token`.
async fn ws_client(addr: SocketAddr, token: &str) -> Result<WsClient, String> {
    let mut headers = HeaderMap::new();
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    WsClientBuilder::default()
        .set_headers(headers)
        .build(format!("ws://{addr}/"))
        .await
        .map_err(|e| format!("WebSocket to {addr}: {e}"))
}

async fn subscribe(client: &WsClient, params: Value) -> Result<Subscription<Value>, String> {
    let mut object = ObjectParams::new();
    for (k, v) in params.as_object().unwrap() {
        object.insert(k, v).unwrap();
    }
    client
        .subscribe("opportunity.subscribe", object, "opportunity.unsubscribe")
        .await
        .map_err(|e| format!("opportunity.subscribe {params}: {e}"))
}

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Open file descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// The inodes of the process's sockets (from `/proc/<pid>/fd`).
fn socket_inodes(pid: u32) -> BTreeSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .filter_map(|target| {
                    let target = target.to_string_lossy().into_owned();
                    Some(target.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The inodes of the process's TCP sockets on its `port` whose peer is on one of `peers` (from
/// `/proc/<pid>/net/tcp`, IPv4).
fn sockets_with(pid: u32, port: u16, peers: &BTreeSet<u16>) -> BTreeSet<String> {
    let inodes = socket_inodes(pid);
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    let port_of = |address: &str| address.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() > 9
                && port_of(fields[1]) == Some(port)
                && port_of(fields[2]).is_some_and(|p| peers.contains(&p))
                && inodes.contains(fields[9]))
            .then(|| fields[9].to_string())
        })
        .collect()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------------
// kill -9 and resume
// ---------------------------------------------------------------------------------------------

/// Creates answered before the kill, and again after the restart, before the writers stop.
const ANSWERED_BEFORE_KILL: usize = 60;
const ANSWERED_AFTER_RESTART: usize = 60;
const WRITERS: usize = 4;
const SUBSCRIBERS: usize = 3;

/// A create answered with success.
#[derive(Debug, Clone)]
struct Answered {
    id: String,
    created_at: chrono::DateTime<chrono::Utc>,
    /// How many times its key was sent.
    tries: usize,
}

/// What the writers got.
struct Writes {
    answered: Mutex<Vec<Answered>>,
    count: watch::Sender<usize>,
    /// Calls that got no answer (refused, reset, cut off) or a retryable error, and were sent
    /// again with the same key.
    retried: AtomicUsize,
    stop: AtomicBool,
}

/// Creates with idempotency keys `w{writer}-{n}`, one after the other, until told to stop. A
/// create that gets no answer, or a retryable one, is sent again with the same key until it is
/// answered (the service may be down meanwhile), so that every key ends answered.
async fn writer(w: usize, addr: SocketAddr, token: String, writes: Arc<Writes>) -> Result<(), String> {
    let http = http_client();
    for n in 0.. {
        if writes.stop.load(Ordering::Acquire) {
            return Ok(());
        }
        let key = format!("w{w}-{n}");
        let mut params = valid_params();
        params["title"] = json!(format!("feed fault {key}"));
        params["idempotencyKey"] = json!(key);
        for tries in 1.. {
            match http_create(&http, addr, &token, &params, None).await.0 {
                Answer::Created(result) => {
                    let id = result["id"].as_str().ok_or_else(|| format!("{key}: no id in {result}"))?.to_string();
                    let created_at = result["createdAt"]
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .ok_or_else(|| format!("{key}: no createdAt in {result}"))?
                        .to_utc();
                    writes.answered.lock().unwrap().push(Answered { id, created_at, tries });
                    writes.count.send_modify(|c| *c += 1);
                    break;
                }
                answer if answer.is_retryable() => {
                    writes.retried.fetch_add(1, Ordering::Relaxed);
                    // The service may be down: a pause between tries, not an ordering.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                answer => return Err(format!("create {key}: {answer:?}")),
            }
        }
    }
    Ok(())
}

/// What one subscriber received, with the run of the service (1: before the kill, 2: after the
/// restart) that delivered it.
type Received = Arc<Mutex<Vec<(u32, Value)>>>;

/// Follows the feed over WebSocket across the runs of the service: subscribes (with `since` when
/// given), collects events until the connection drops, then waits for the next run and
/// subscribes again with `since` = the last `eventId` it received. `progress` says the run it is
/// subscribed in and the last `eventId` received.
async fn subscriber(
    token: String,
    mut runs: watch::Receiver<(u32, SocketAddr)>,
    since: Option<String>,
    received: Received,
    progress: watch::Sender<(u32, Option<String>)>,
) -> Result<(), String> {
    let mut last = since;
    let mut seen_run = 0;
    loop {
        let (run, addr) = *runs.wait_for(|(run, _)| *run > seen_run).await.map_err(|_| "no next run".to_string())?;
        seen_run = run;
        let client = ws_client(addr, &token).await?;
        let params = match &last {
            Some(since) => json!({"since": since}),
            None => json!({}),
        };
        let mut subscription = subscribe(&client, params).await.map_err(|e| format!("run {run}: {e}"))?;
        progress.send_modify(|p| p.0 = run);
        while let Some(item) = subscription.next().await {
            let event = item.map_err(|e| format!("run {run}: a notification that is no event: {e}"))?;
            let id = event_id(&event);
            if last.as_ref().is_some_and(|l| *l >= id) {
                return Err(format!("run {run}: event {id} after {last:?}: a repeat, or out of order"));
            }
            received.lock().unwrap().push((run, event));
            last = Some(id.clone());
            progress.send_modify(|p| p.1 = Some(id));
        }
        if matches!(subscription.close_reason(), Some(SubscriptionCloseReason::Lagged)) {
            return Err(format!("run {run}: the test's client fell behind (a fault of the test)"));
        }
        // The stream ended: the connection must be gone (the kill), not the subscription ended
        // by the service on a live connection (slow_consumer, an error).
        if tokio::time::timeout(Duration::from_secs(2), client.on_disconnect()).await.is_err() {
            return Err(format!("run {run}: the service ended the subscription on an open connection"));
        }
    }
}

/// SIGKILL in the middle of keyed creates from several tasks; the service starts again on the
/// same database and address; subscribers resume with `since`. Every create answered with
/// success has exactly one `created` event in what each subscriber received before and after the
/// restart, and each subscriber's events are the feed itself: increasing, no gap, no repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribers_resume_after_kill_9_with_every_answered_create_once() {
    tokio::time::timeout(WITHIN, kill_9_and_resume()).await.expect("the test finishes within 30 s");
}

async fn kill_9_and_resume() {
    let t0 = Instant::now();
    let db = TestDatabase::new();
    let mut service = start(&db.url, vec![]).await;
    let addr = service.addr;
    let token = sign(&claims(Uuid::new_v4(), &[Uuid::new_v4()], ALL_SCOPES));
    let http = http_client();
    let origin = call(&http, addr, &token, "opportunity.changes", json!({})).await.unwrap()["nextSince"]
        .as_str()
        .unwrap()
        .to_string();

    // Subscribers: the first replays from the origin, the others start live; each is subscribed
    // before any create is made.
    let (runs_tx, runs) = watch::channel((1u32, addr));
    let mut subscribers = Vec::new();
    for s in 0..SUBSCRIBERS {
        let received: Received = Arc::default();
        let (progress_tx, progress) = watch::channel((0u32, None::<String>));
        let since = (s == 0).then(|| origin.clone());
        let task = tokio::spawn(subscriber(token.clone(), runs.clone(), since, received.clone(), progress_tx));
        subscribers.push((task, received, progress));
    }
    for (_, _, progress) in &mut subscribers {
        progress.wait_for(|p| p.0 == 1).await.expect("subscribed in the first run");
    }

    let (count, mut answered_count) = watch::channel(0usize);
    let writes = Arc::new(Writes {
        answered: Mutex::default(),
        count,
        retried: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    });
    let writers: Vec<_> = (0..WRITERS).map(|w| tokio::spawn(writer(w, addr, token.clone(), writes.clone()))).collect();

    // The kill, with creates in flight from every writer.
    answered_count.wait_for(|n| *n >= ANSWERED_BEFORE_KILL).await.unwrap();
    let killed_at = chrono::Utc::now();
    service.signal("KILL");
    let at_kill = *answered_count.borrow();
    let (status, service) =
        tokio::task::spawn_blocking(move || (service.wait(Duration::from_secs(10)), service)).await.unwrap();
    let status = status.expect("the service exits on SIGKILL");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status:?}");
    drop(service);

    // The restart: the same database, the same address.
    let restarted_at = Instant::now();
    let _service = start(&db.url, vec![("LISTEN_ADDR", addr.to_string())]).await;
    let restart = restarted_at.elapsed();
    runs_tx.send((2, addr)).unwrap();
    for (_, _, progress) in &mut subscribers {
        progress.wait_for(|p| p.0 == 2).await.expect("subscribed again after the restart");
    }
    answered_count.wait_for(|n| *n >= at_kill + ANSWERED_AFTER_RESTART).await.unwrap();
    writes.stop.store(true, Ordering::Release);
    for w in writers {
        w.await.unwrap().unwrap_or_else(|e| panic!("a writer failed: {e}"));
    }
    let answered = writes.answered.lock().unwrap().clone();

    // The feed as `opportunity.changes` reads it after the fact (a fresh client: the first one's
    // connections went with the killed process), and what each subscriber got.
    let feed = whole_feed(&http_client(), addr, &token, &origin).await;
    let feed_ids: Vec<String> = feed.iter().map(event_id).collect();
    let head = feed_ids.last().cloned().expect("events were recorded");
    for (task, _, progress) in &mut subscribers {
        let caught_up =
            tokio::time::timeout(Duration::from_secs(10), progress.wait_for(|p| p.1.as_deref() == Some(&*head)));
        if caught_up.await.is_err() || task.is_finished() {
            let last = progress.borrow().1.clone();
            let outcome = if task.is_finished() { format!("{:?}", task.await) } else { "still open".to_string() };
            panic!("a subscriber did not reach the feed's head {head} within 10 s: last {last:?}, task {outcome}");
        }
    }

    // Every answered create: one opportunity each, one `created` event each in the feed.
    let answered_ids: BTreeSet<&str> = answered.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(answered_ids.len(), answered.len(), "each key answered with its own opportunity");
    assert!(feed_ids.windows(2).all(|w| w[0] < w[1]), "the feed increases");
    let feed_created: BTreeSet<&str> = feed
        .iter()
        .inspect(|e| assert_eq!(e["type"], "created", "only creates were made: {e}"))
        .map(|e| e["opportunity"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(feed_created.len(), feed.len(), "one event per opportunity in the feed");
    // Every key was sent until answered, so every stored create was answered too.
    assert_eq!(feed_created, answered_ids, "the feed holds exactly the answered creates");

    let mut figures = Vec::new();
    for (s, (task, received, _)) in subscribers.into_iter().enumerate() {
        task.abort();
        let received = received.lock().unwrap().clone();
        let ids: Vec<String> = received.iter().map(|(_, e)| event_id(e)).collect();
        if ids != feed_ids {
            let at = ids.iter().zip(&feed_ids).position(|(a, b)| a != b).unwrap_or(ids.len().min(feed_ids.len()));
            panic!(
                "subscriber {s} got {} events, the feed holds {}; first difference at {at}: got {:?}, feed {:?}",
                ids.len(),
                feed_ids.len(),
                ids.get(at),
                feed_ids.get(at)
            );
        }
        let mut created: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, e) in &received {
            if e["type"] == "created" {
                *created.entry(e["opportunity"]["id"].as_str().unwrap()).or_default() += 1;
            }
        }
        for id in &answered_ids {
            assert_eq!(created.get(id).copied().unwrap_or(0), 1, "subscriber {s}: created events of {id}");
        }
        let before = received.iter().filter(|(run, _)| *run == 1).count();
        let after = received.len() - before;
        assert!(before > 0 && after > 0, "subscriber {s} got events on both sides of the kill ({before}, {after})");
        figures.push(format!("subscriber {s}: {before} events before the kill + {after} after"));
    }
    let retried = writes.retried.load(Ordering::Relaxed);
    assert!(retried > 0, "no create felt the kill");
    // Creates committed before the kill whose answer the kill took: made before it, and their key
    // was sent again (and replayed).
    let replayed = answered.iter().filter(|a| a.tries > 1 && a.created_at < killed_at).count();
    eprintln!(
        "kill -9 with {WRITERS} keyed writers and {SUBSCRIBERS} subscribers: {} creates answered ({at_kill} when the \
         kill was sent), {retried} tries without an answer sent again, {replayed} of them committed before the kill \
         and answered by a replay after it; restart took {restart:?}; feed {} events up to {head}; {}; {:?} in all",
        answered.len(),
        feed.len(),
        figures.join(", "),
        t0.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Subscribers that never read
// ---------------------------------------------------------------------------------------------

/// The most time creates run while the stalled subscribers are open: they run until the
/// notifications addressed to the stalled subscribers are 1.2 times the margin (a few seconds).
const LOAD_CAP: Duration = Duration::from_secs(15);
/// The growth of the service's RSS over its start that the test accepts.
const RSS_MARGIN_MIB: f64 = 300.0;

/// Events after which every stalled subscription has been ended as a slow consumer: 1,000
/// waiting, beyond the 1,024 messages a connection buffers and a few in its socket, with room
/// to spare.
const ENDED_AFTER: usize = 2500;

/// What runs while subscribers do not read.
struct Stall {
    /// Connections that subscribe and never read.
    subscribers: usize,
    /// The length of each of the five long free texts of the load's creates (`None`: one
    /// realistic `scopeSummary`, about 1 KiB per event).
    text_chars: Option<usize>,
    /// Creates per HTTP batch of the load.
    batch: usize,
}

/// A WebSocket connection that subscribes and then never reads: a raw socket with a small
/// receive buffer (so that what the service sends it piles up in the service, not in the
/// kernel), the handshake, one masked `opportunity.subscribe` frame, and nothing more.
async fn stalled_subscriber(addr: SocketAddr, token: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.expect("connect");
    let (status, head, mut stream) = handshake_on(stream, addr, token).await;
    assert_eq!(status, 101, "{head}");
    subscribe_raw(&mut stream, 1, "{}").await;
    stream
}

/// Sends `opportunity.subscribe` with `params` (JSON text) as one masked text frame.
async fn subscribe_raw(stream: &mut tokio::net::TcpStream, id: usize, params: &str) {
    let payload = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"opportunity.subscribe","params":{params}}}"#);
    assert!(payload.len() < 126, "one short frame");
    let mask = [7u8, 1, 3, 5];
    let mut frame = vec![0x81u8, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame).await.unwrap();
}

/// A gauge or counter of `/metrics`.
async fn metric(http: &reqwest::Client, addr: SocketAddr, name: &str) -> f64 {
    let text = http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// The params of the load's creates: a realistic opportunity (about 1 KiB as an event), or one
/// whose five long free texts are `text_chars` long each.
fn load_params(n: usize, text_chars: Option<usize>) -> Value {
    let mut params = valid_params();
    params["title"] = json!(format!("Stalled-subscriber load #{n}"));
    params["solutionFamilies"] = json!(["HVAC controls", "BMS"]);
    params["estimatedValue"] = json!(86000);
    params["priority"] = json!("high");
    match text_chars {
        None => {
            params["scopeSummary"] = json!(
                "Replace the pneumatic controls of three air handlers with DDC, integrate the chillers into the \
                 existing BMS over BACnet/IP, and commission the new sequences before the cooling season."
            )
        }
        Some(n) => {
            for field in
                ["scopeSummary", "competitorNotes", "winLossReason", "nextStepDescription", "technicalRequirements"]
            {
                params[field] = json!("x".repeat(n));
            }
        }
    }
    params
}

/// 100 subscribers whose connections never read while creates run for a few seconds: the
/// service's RSS stays within a margin of its start, the stalled subscriptions are ended as slow
/// consumers, their descriptors go once they close, and an ordinary caller is served meanwhile:
/// HTTP creates, and a subscriber that reads gets its events promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribers_that_never_read_leave_memory_bounded_and_others_served() {
    let stall = Stall { subscribers: 100, text_chars: None, batch: 50 };
    tokio::time::timeout(WITHIN, never_reading_subscribers(stall)).await.expect("the test finishes within 30 s");
}

/// The same with large opportunities (five free texts of 10,000 characters: about 50 KiB per
/// event) and 30 stalled subscribers. What the service holds for a subscriber that does not
/// read is counted in messages: the undelivered events of its subscriptions (shared with every
/// other subscriber) and the few notifications made for its connection (32). With jsonrpsee's
/// default of 1,024 of those, each stalled connection held about 1,024 × 50 KiB = 50 MiB: 370
/// creates in 4 s grew the RSS by 532 MiB (debug build; 18 MiB without the stalled subscribers).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribers_that_never_read_large_events_leave_memory_bounded() {
    let stall = Stall { subscribers: 30, text_chars: Some(10_000), batch: 10 };
    tokio::time::timeout(WITHIN, never_reading_subscribers(stall)).await.expect("the test finishes within 30 s");
}

async fn never_reading_subscribers(stall: Stall) {
    let Stall { subscribers, text_chars, batch } = stall;
    let db = TestDatabase::new();
    let service = start(&db.url, vec![]).await;
    let (addr, pid) = (service.addr, service.child.id());
    let token = sign(&claims(Uuid::new_v4(), &[Uuid::new_v4()], ALL_SCOPES));
    let http = http_client();
    // Warm up: the pool, the writer, the feed.
    for n in 0..5 {
        call(&http, addr, &token, "opportunity.create", load_params(n, text_chars)).await.unwrap();
    }
    let sample = call(&http, addr, &token, "opportunity.changes", json!({"limit": 1})).await.unwrap();
    // A notification is the event and about 90 bytes around it.
    let event_bytes = sample["events"][0].to_string().len() + 90;
    let (rss_before, _) = memory_kib(pid);
    let fds_before = open_fds(pid);

    let mut stalled = Vec::new();
    for _ in 0..subscribers {
        stalled.push(stalled_subscriber(addr, &token).await);
    }
    // Live once the gauge counts them (read from /metrics, never from their sockets).
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&http, addr, "subscriptions_live").await < subscribers as f64 {
        assert!(Instant::now() < deadline, "the {subscribers} subscriptions did not all go live within 10 s");
        tokio::task::yield_now().await;
    }
    let fds_stalled = open_fds(pid);
    let peers: BTreeSet<u16> = stalled.iter().map(|s| s.local_addr().unwrap().port()).collect();
    assert_eq!(sockets_with(pid, addr.port(), &peers).len(), subscribers, "the service holds a socket for each");
    // Enough creates that the notifications addressed to the stalled subscribers are 1.2 times
    // the margin: a service that kept them all would fail.
    let target = (1.2 * RSS_MARGIN_MIB * 1048576.0 / (subscribers * event_bytes) as f64).ceil() as usize;

    // The service's memory and descriptors, sampled while the load runs.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let sampling = sampling.clone();
        async move {
            let (mut peak_rss, mut peak_fds) = (0u64, 0usize);
            while sampling.load(Ordering::Acquire) {
                peak_rss = peak_rss.max(memory_kib(pid).0);
                peak_fds = peak_fds.max(open_fds(pid));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (peak_rss, peak_fds)
        }
    });

    // An ordinary subscriber that reads, for expansions only (the load makes retrofits).
    let reader = ws_client(addr, &token).await.unwrap();
    let mut expansions = subscribe(&reader, json!({"pipelineType": "expansion"})).await.unwrap();

    // The load: batches of creates from 4 tasks.
    let started = Instant::now();
    let created = Arc::new(AtomicUsize::new(0));
    let loading = || created.load(Ordering::Relaxed) < target && started.elapsed() < LOAD_CAP;
    let loaders: Vec<_> = (0..4)
        .map(|t| {
            let (http, token, created) = (http.clone(), token.clone(), created.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while created.load(Ordering::Relaxed) < target && started.elapsed() < LOAD_CAP {
                    let calls: Vec<Value> = (0..batch)
                        .map(|i| {
                            let params = load_params(t * 1_000_000 + n * batch + i, text_chars);
                            request(json!(i), "opportunity.create", params)
                        })
                        .collect();
                    n += 1;
                    let response = http
                        .post(format!("http://{addr}/"))
                        .header("content-type", "application/json")
                        .header("authorization", format!("Bearer {token}"))
                        .body(json!(calls).to_string())
                        .send()
                        .await
                        .map_err(|e| format!("a batch of creates: {e}"))?;
                    let answers: Value = response.json().await.map_err(|e| format!("a batch of creates: {e}"))?;
                    for answer in answers.as_array().ok_or_else(|| format!("a batch answered {answers}"))? {
                        if answer.get("result").is_none() {
                            return Err(format!("a create of the load failed: {answer}"));
                        }
                        created.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok::<_, String>(())
            })
        })
        .collect();

    // Meanwhile, an ordinary caller: a create over HTTP and its event on the reading subscriber.
    let mut probes = Vec::new();
    while loading() {
        let mut params = valid_params();
        params["pipelineType"] = json!("expansion");
        let sent = Instant::now();
        let created = call(&http, addr, &token, "opportunity.create", params).await.unwrap();
        let answered = sent.elapsed();
        let event = tokio::time::timeout(Duration::from_secs(5), expansions.next())
            .await
            .expect("the reading subscriber gets the event within 5 s")
            .expect("the reading subscriber's subscription is open")
            .unwrap();
        assert_eq!(event["opportunity"]["id"], created["id"]);
        probes.push((answered, sent.elapsed()));
    }
    for l in loaders {
        l.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
    }
    let created = created.load(Ordering::Relaxed);
    let load_time = started.elapsed();
    sampling.store(false, Ordering::Release);
    let (peak_rss, peak_fds) = sampler.await.unwrap();
    let (rss_loaded, hwm) = memory_kib(pid);
    // With far more than 1,000 events waiting (beyond the 1,024 messages a connection buffers),
    // the service ends every stalled subscription.
    let all_ended = created > ENDED_AFTER;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut slow_ends = metric(&http, addr, "subscription_slow_consumer_ends_total").await;
    while all_ended && (slow_ends as usize) < subscribers && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        slow_ends = metric(&http, addr, "subscription_slow_consumer_ends_total").await;
    }
    let live = metric(&http, addr, "subscriptions_live").await;

    // After: the stalled clients close, and the service lets go of their sockets.
    // (A socket closed with unread data is reset, and leaves the TCP table at once: what counts
    // is whether the service still holds its descriptor, by inode.)
    let stalled_sockets = sockets_with(pid, addr.port(), &peers);
    let held = stalled_sockets.len();
    drop(stalled);
    let still_held = || socket_inodes(pid).intersection(&stalled_sockets).count();
    let deadline = Instant::now() + Duration::from_secs(10);
    while still_held() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let still_held = still_held();
    let fds_after = open_fds(pid);
    // And it still serves.
    let sent = Instant::now();
    call(&http, addr, &token, "opportunity.create", valid_params()).await.expect("a create after the stalled clients");
    let last_call = sent.elapsed();
    let (rss_after, _) = memory_kib(pid);

    let max_answer = probes.iter().map(|p| p.0).max().unwrap_or_default();
    let max_event = probes.iter().map(|p| p.1).max().unwrap_or_default();
    let growth = mib(peak_rss.max(hwm)) - mib(rss_before);
    let addressed = (created * subscribers * event_bytes) as f64 / 1048576.0;
    eprintln!(
        "{subscribers} never-reading subscribers, {created} creates of about {event_bytes} bytes per notification in \
         {load_time:.1?} ({:.0}/s; {:.0} MiB of notifications addressed to the stalled subscribers): RSS before {:.1} \
         MiB, peak {:.1} MiB (VmHWM {:.1} MiB; +{growth:.1} MiB), at the end of the load {:.1} MiB, after they closed \
         {:.1} MiB; fds before {fds_before}, with them {fds_stalled}, peak {peak_fds}, after {fds_after} (sockets of \
         the stalled clients held at the end of the load {held}, after they closed {still_held}); \
         slow_consumer ends {slow_ends}, live subscriptions at the end of the load {live}; ordinary caller: {} creates, \
         answer max {max_answer:?}, its event max {max_event:?}; a create afterwards {last_call:?}",
        created as f64 / load_time.as_secs_f64(),
        addressed,
        mib(rss_before),
        mib(peak_rss),
        mib(hwm),
        mib(rss_loaded),
        mib(rss_after),
        probes.len()
    );
    assert!(
        addressed > RSS_MARGIN_MIB,
        "the load was too small to tell: {created} creates in {LOAD_CAP:?} addressed {addressed:.0} MiB to the stalled \
         subscribers, not more than the margin of {RSS_MARGIN_MIB} MiB"
    );
    assert!(
        growth < RSS_MARGIN_MIB,
        "the service's RSS grew by {growth:.1} MiB over its start with {subscribers} subscribers that never read \
         (bound {RSS_MARGIN_MIB} MiB)"
    );
    assert_eq!(still_held, 0, "sockets of the stalled clients held 10 s after they closed");
    if all_ended {
        assert_eq!(slow_ends as usize, subscribers, "every stalled subscription was ended as a slow consumer");
    }
    assert!(!probes.is_empty(), "the ordinary caller was served during the load");
    assert!(max_answer < Duration::from_secs(5), "an ordinary create took {max_answer:?} during the load");
}

/// Connections that never read, each with 16 subscriptions replaying from the oldest event,
/// over 5,000 stored events of about 1.4 KB. A replay goes at the subscriber's pace, and each
/// replaying subscription holds copies of its own: it now reads 64 events at a time, once at
/// most 32 of its events wait. When a replay read 1,000 at a time into a queue of 1,000 (beside
/// jsonrpsee's 1,024 messages per connection), one such connection held 40-50 MiB until
/// `REQUEST_TIMEOUT` closed it: 10 of them grew the RSS by 386 MiB within 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replaying_subscribers_that_never_read_leave_memory_bounded() {
    tokio::time::timeout(Duration::from_secs(60), replaying_never_reading()).await.expect("within 60 s");
}

async fn replaying_never_reading() {
    const CONNECTIONS: usize = 10;
    let db = TestDatabase::new();
    let service = start(&db.url, vec![]).await;
    let (addr, pid) = (service.addr, service.child.id());
    let token = sign(&claims(Uuid::new_v4(), &[Uuid::new_v4()], ALL_SCOPES));
    let http = http_client();
    let origin = call(&http, addr, &token, "opportunity.changes", json!({})).await.unwrap()["nextSince"]
        .as_str()
        .unwrap()
        .to_string();
    for b in 0..50 {
        let calls: Vec<Value> =
            (0..100).map(|i| request(json!(i), "opportunity.create", load_params(b * 100 + i, None))).collect();
        let answers = call_batch(&http, addr, &token, &calls).await;
        assert!(answers.iter().all(|a| a.get("result").is_some()), "the stored events are made");
    }
    let (rss_before, _) = memory_kib(pid);
    let mut stalled = Vec::new();
    for _ in 0..CONNECTIONS {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let (status, _, mut stream) = handshake_on(stream, addr, &token).await;
        assert_eq!(status, 101);
        for id in 0..16 {
            subscribe_raw(&mut stream, id, &format!(r#"{{"since":"{origin}"}}"#)).await;
        }
        stalled.push(stream);
    }
    // What the replays hold once they have filled what they can: sampled for 10 s.
    let mut peak = 0;
    for _ in 0..100 {
        peak = peak.max(memory_kib(pid).0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let growth = mib(peak) - mib(rss_before);
    eprintln!(
        "{CONNECTIONS} never-reading connections x 16 subscriptions replaying 5,000 events: RSS before {:.1} MiB, \
         peak {:.1} MiB (+{growth:.1} MiB)",
        mib(rss_before),
        mib(peak)
    );
    drop(stalled);
    assert!(growth < RSS_MARGIN_MIB, "the RSS grew by {growth:.1} MiB (bound {RSS_MARGIN_MIB} MiB)");
}

/// A JSON-RPC batch over HTTP; the answers.
async fn call_batch(http: &reqwest::Client, addr: SocketAddr, token: &str, calls: &[Value]) -> Vec<Value> {
    let response = http
        .post(format!("http://{addr}/"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(json!(calls).to_string())
        .send()
        .await
        .unwrap();
    response.json::<Value>().await.unwrap().as_array().cloned().unwrap_or_default()
}

/// The WebSocket handshake on a connected stream; the status, the head, and the stream.
async fn handshake_on(
    mut stream: tokio::net::TcpStream,
    addr: SocketAddr,
    token: &str,
) -> (u16, String, tokio::net::TcpStream) {
    let head = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: \
         dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n =
            tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await.expect("a handshake answer");
        assert_eq!(n.unwrap(), 1, "closed during the handshake: {}", String::from_utf8_lossy(&answer));
        answer.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&answer).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head, stream)
}

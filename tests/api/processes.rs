//! Several service processes on one database (CONTRACT.md §10): they start together, share one
//! idempotency key space, and one change feed in one order. Each process is the real binary.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::*;

/// Starts `n` processes of the binary on `url` at the same moment.
fn start_together(url: &str, n: usize) -> Vec<ServiceProcess> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (url, barrier) = (url.to_string(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                ServiceProcess::start(&url, &[])
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("every process comes up")).collect()
}

async fn post(http: &reqwest::Client, p: &ServiceProcess, token: &str, body: &Value, key: Option<&str>) -> Value {
    let mut req = http
        .post(format!("http://{}/", p.addr))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"));
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    req.body(body.to_string()).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_started_together_on_an_empty_database_all_come_up_and_share_keys_and_events() {
    let db = TestDatabase::new();
    let processes = start_together(&db.url, 5);
    let http = reqwest::Client::new();
    let user = uuid::Uuid::new_v4();
    let workspace = uuid::Uuid::new_v4();
    let token = sign(&claims(user, &[workspace], opportunity_service::auth::ALL_SCOPES));
    for p in &processes {
        let health = http.get(format!("http://{}/ready", p.addr)).send().await.unwrap();
        assert_eq!(health.status(), 200, "every process serves");
    }

    // The same key sent to every process at once stores one opportunity.
    let create = request(json!(1), "opportunity.create", valid_params());
    let answers = futures_util::future::join_all(
        processes.iter().map(|p| post(&http, p, &token, &create, Some("same-key-everywhere"))),
    )
    .await;
    let ids: BTreeSet<String> = answers.iter().filter_map(|a| a["result"]["id"].as_str().map(str::to_string)).collect();
    assert_eq!(ids.len(), 1, "one opportunity for one key: {answers:?}");
    for a in &answers {
        let replayed_or_waiting = a.get("result").is_some() || a["error"]["data"]["retryable"] == true;
        assert!(replayed_or_waiting, "a replay, or a retryable conflict while the first runs: {a}");
    }

    // Creates spread over the processes: the feed holds each once, in one order, whoever wrote.
    let origin =
        post(&http, &processes[0], &token, &request(json!(1), "opportunity.changes", json!({})), None).await["result"]
            ["nextSince"]
            .clone();
    let writes = processes.iter().enumerate().map(|(i, p)| {
        let (http, token) = (&http, token.clone());
        async move {
            let mut ids = Vec::new();
            for n in 0..20 {
                let mut params = valid_params();
                params["title"] = json!(format!("process {i} #{n}"));
                let a = post(http, p, &token, &request(json!(n), "opportunity.create", params), None).await;
                ids.push(a["result"]["id"].as_str().expect("created").to_string());
            }
            ids
        }
    });
    let written: BTreeSet<String> = futures_util::future::join_all(writes).await.into_iter().flatten().collect();
    let mut seen = Vec::new();
    let mut since = origin;
    loop {
        let params = json!({"since": since, "limit": 1000});
        let page = post(&http, &processes[4], &token, &request(json!(1), "opportunity.changes", params), None).await;
        let events = page["result"]["events"].as_array().unwrap().clone();
        if events.is_empty() {
            break;
        }
        since = page["result"]["nextSince"].clone();
        seen.extend(events);
    }
    // Optimistic locking holds across processes: the same update at the same expected version
    // sent to every process at once has exactly one winner.
    let target = written.iter().next().unwrap().clone();
    let update =
        request(json!(1), "opportunity.update", json!({"id": target, "expectedVersion": 1, "stage": "qualified"}));
    let answers = futures_util::future::join_all(processes.iter().map(|p| post(&http, p, &token, &update, None))).await;
    let winners = answers.iter().filter(|a| a.get("result").is_some()).count();
    assert_eq!(winners, 1, "one winner: {answers:?}");
    for a in answers.iter().filter(|a| a.get("error").is_some()) {
        assert_eq!(a["error"]["data"]["reason"], "version_mismatch", "{a}");
        assert_eq!(a["error"]["data"]["currentVersion"], 2, "{a}");
    }

    // A subscriber of one process sees a change made through another, promptly.
    let mut headers = jsonrpsee::ws_client::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    let ws = jsonrpsee::ws_client::WsClientBuilder::default()
        .set_headers(headers)
        .build(format!("ws://{}/", processes[1].addr))
        .await
        .unwrap();
    let mut sub: jsonrpsee::core::client::Subscription<Value> =
        jsonrpsee::core::client::SubscriptionClientT::subscribe(
            &ws,
            "opportunity.subscribe",
            jsonrpsee::core::params::ObjectParams::new(),
            "opportunity.unsubscribe",
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let made = post(&http, &processes[3], &token, &create, None).await;
    let event = tokio::time::timeout(std::time::Duration::from_secs(5), sub.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(event["opportunity"]["id"], made["result"]["id"]);
    eprintln!("a create through process 3 reached a subscriber of process 1 in {:?}", started.elapsed());

    let event_ids: Vec<&str> = seen.iter().map(|e| e["eventId"].as_str().unwrap()).collect();
    assert!(event_ids.windows(2).all(|w| w[0] < w[1]), "one order, no repeat");
    let opportunities: BTreeSet<String> =
        seen.iter().map(|e| e["opportunity"]["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(opportunities, written, "every create of every process, once");
}

//! What operators see: `/metrics` in the Prometheus text format, and one log line per call that
//! names method, workspace, duration, outcome and request id, never the token or free text.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

/// The value of one sample line of the text exposition, e.g. `rpc_calls_total{…} 3`.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_calls_by_method_and_outcome() {
    let app = spawn_app().await;
    for _ in 0..3 {
        assert!(app.create(valid_params()).await.get("result").is_some());
    }
    app.create(json!({"title": ""})).await;
    app.post_raw(request(json!(1), "opportunity.create", valid_params()).to_string(), &[]).await;
    app.post(&request(json!(1), "nope.nothing", json!({})), &app.token()).await;

    let response = app.http.get(format!("http://{}/metrics", app.addr)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    let count = |labels: &str| sample(&text, &format!("rpc_calls_total{{{labels}}}"));
    assert_eq!(count(r#"method="opportunity.create",outcome="OK""#), Some(3.0), "{text}");
    assert_eq!(count(r#"method="opportunity.create",outcome="BAD_REQUEST""#), Some(1.0), "{text}");
    assert_eq!(count(r#"method="opportunity.create",outcome="UNAUTHORIZED""#), Some(1.0), "{text}");
    // Unknown method names are folded into one label, so callers cannot grow the label set.
    assert_eq!(count(r#"method="unknown",outcome="NOT_FOUND""#), Some(1.0), "{text}");
    assert_eq!(sample(&text, r#"rpc_call_duration_seconds_count{method="opportunity.create"}"#), Some(5.0), "{text}");
    assert!(sample(&text, r#"database_pool_connections{state="idle"}"#).is_some(), "{text}");
    assert!(sample(&text, r#"database_pool_connections{state="in_use"}"#).is_some(), "{text}");
    assert_eq!(sample(&text, r#"database_errors_total{kind="unavailable"}"#), Some(0.0), "{text}");
    assert_eq!(sample(&text, "database_reachable"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "database_writes_queued"), Some(0.0), "every write answered: {text}");
}

#[tokio::test]
async fn one_log_line_per_call_without_token_or_free_text() {
    let db = TestDatabase::new();
    let service = ServiceProcess::start(&db.url, &[("LOG_FORMAT", "json")]);
    let workspace = uuid::Uuid::new_v4();
    let token = sign(&claims(uuid::Uuid::new_v4(), &[workspace], opportunity_service::auth::ALL_SCOPES));
    let mut params = valid_params();
    params["title"] = json!("Confidential tower retrofit");
    params["competitorNotes"] = json!("competitor-notes-never-logged");
    let body = request(json!(1), "opportunity.create", params).to_string();
    let client = reqwest::Client::new();
    let answer: serde_json::Value = client
        .post(format!("http://{}/", service.addr))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer.get("result").is_some(), "{answer}");

    // The line is written when the answer is; give the reader thread a moment to collect it.
    let mut line = None;
    for _ in 0..100 {
        line = service.log.lock().unwrap().lines().find(|l| l.contains(r#""message":"call""#)).map(str::to_string);
        if line.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = line.expect("a log line for the call");
    let record: serde_json::Value = serde_json::from_str(&line).expect("LOG_FORMAT=json writes JSON lines");
    assert_eq!(record["span"]["method"], "opportunity.create", "{line}");
    assert_eq!(record["span"]["workspace"], workspace.to_string(), "{line}");
    assert_eq!(record["outcome"], "OK", "{line}");
    assert!(record["micros"].is_u64(), "{line}");
    assert!(uuid::Uuid::parse_str(record["span"]["request_id"].as_str().unwrap_or_default()).is_ok(), "{line}");
    let log = service.log.lock().unwrap().clone();
    assert!(!log.contains(&token), "the token must never be logged");
    assert!(!log.contains("Confidential tower retrofit") && !log.contains("competitor-notes-never-logged"), "{log}");
}

/// An internal failure that jsonrpsee itself reports (an answer over MAX_RESPONSE_BYTES) carries
/// the request id of its call's log line, so that an operator finds the call a caller reports.
#[tokio::test]
async fn an_answer_too_big_carries_the_request_id_of_its_calls_log_line() {
    let db = TestDatabase::new();
    let service = ServiceProcess::start(&db.url, &[("LOG_FORMAT", "json"), ("MAX_RESPONSE_BYTES", "3000")]);
    let workspace = uuid::Uuid::new_v4();
    let token = sign(&claims(uuid::Uuid::new_v4(), &[workspace], opportunity_service::auth::ALL_SCOPES));
    let client = reqwest::Client::new();
    let post = |body: serde_json::Value| {
        client
            .post(format!("http://{}/", service.addr))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .body(body.to_string())
            .send()
    };
    for i in 0..5 {
        let answer: serde_json::Value =
            post(request(json!(i), "opportunity.create", valid_params())).await.unwrap().json().await.unwrap();
        assert!(answer.get("result").is_some(), "{answer}");
    }
    // Five opportunities of about 900 bytes each are over 3,000 bytes.
    let answer: serde_json::Value =
        post(request(json!(9), "opportunity.list", json!({"limit": 5}))).await.unwrap().json().await.unwrap();
    assert_eq!(answer["error"]["data"]["code"], "INTERNAL_SERVER_ERROR", "{answer}");
    let request_id = answer["error"]["data"]["requestId"].as_str().expect("a request id").to_string();
    let mut line = None;
    for _ in 0..100 {
        line = service
            .log
            .lock()
            .unwrap()
            .lines()
            .find(|l| l.contains(r#""message":"call""#) && l.contains("opportunity.list"))
            .map(str::to_string);
        if line.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = line.expect("a log line for the list call");
    let record: serde_json::Value = serde_json::from_str(&line).expect("LOG_FORMAT=json writes JSON lines");
    assert_eq!(record["outcome"], "INTERNAL_SERVER_ERROR", "{line}");
    assert_eq!(record["span"]["request_id"], request_id.as_str(), "the call's line has the answer's requestId: {line}");
}

/// Every answer carries the request's id in `X-Request-Id`: the caller's own, else the trace id
/// of its `traceparent`, else a new one; an id unfit for a log line is replaced.
#[tokio::test]
async fn every_answer_carries_the_request_id() {
    let app = spawn_app().await;
    let body = request(serde_json::json!(1), "opportunity.create", valid_params()).to_string();
    let send = |headers: Vec<(&'static str, String)>| {
        let mut req = app
            .http
            .post(app.url())
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", app.token()))
            .body(body.clone());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move {
            let response = req.send().await.unwrap();
            response.headers().get("x-request-id").map(|v| v.to_str().unwrap().to_string())
        }
    };
    assert_eq!(send(vec![("x-request-id", "order-sync-42".into())]).await.as_deref(), Some("order-sync-42"));
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert_eq!(
        send(vec![("traceparent", traceparent.into())]).await.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    let fresh = send(vec![]).await.expect("an id even when none was sent");
    assert!(uuid::Uuid::try_parse(&fresh).is_ok(), "{fresh}");
    for unfit in ["has spaces in it", &"x".repeat(129), "semi;colon"] {
        let got = send(vec![("x-request-id", unfit.to_string())]).await.unwrap();
        assert!(uuid::Uuid::try_parse(&got).is_ok(), "{unfit:?} is replaced: {got}");
    }
    let bad_trace = send(vec![("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01".into())]).await;
    assert!(uuid::Uuid::try_parse(&bad_trace.unwrap()).is_ok(), "an all-zero trace id is invalid");
    // Errors and the probes carry it too.
    let response = app.http.get(format!("http://{}/health", app.addr)).send().await.unwrap();
    assert!(response.headers().contains_key("x-request-id"));
    let response = app.http.post(app.url()).header("content-type", "application/json").body("{").send().await.unwrap();
    assert!(response.headers().contains_key("x-request-id"));
}

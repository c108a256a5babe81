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

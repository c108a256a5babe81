//! Browsers on other origins: CORS on HTTP and the `Origin` check of WebSocket handshakes, both
//! by `CORS_ALLOWED_ORIGINS` (none by default).

use serde_json::Value;

use crate::helpers::*;

const DASHBOARD: &str = "http://dash.example:5173";
const ELSEWHERE: &str = "https://evil.example";

/// A CORS preflight for a POST with the headers a dashboard sends.
async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.http
        .request(reqwest::Method::OPTIONS, format!("http://{}/", app.addr))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type,idempotency-key,x-workspace-id")
        .send()
        .await
        .unwrap()
}

/// A create from a page of `origin`: its status, the CORS headers and the body.
async fn create_from(app: &TestApp, origin: &str) -> (u16, Option<String>, Option<String>, Value) {
    let body = request(serde_json::json!(1), "opportunity.create", valid_params());
    let response = app
        .http
        .post(format!("http://{}/", app.addr))
        .header("origin", origin)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", app.token()))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_string());
    let (allow, expose) = (header("access-control-allow-origin"), header("access-control-expose-headers"));
    (response.status().as_u16(), allow, expose, response.json().await.unwrap())
}

fn origin_header(origin: &str) -> String {
    format!("Origin: {origin}")
}

#[tokio::test]
async fn cors_is_off_by_default() {
    let app = spawn_app().await;
    let response = preflight(&app, DASHBOARD).await;
    assert_eq!(response.status().as_u16(), 405, "no preflight is answered without an allowed origin");
    assert!(response.headers().get("access-control-allow-origin").is_none());
    // A call that names an origin is still served (curl, servers), without CORS headers, so a
    // browser does not hand the answer to the page.
    let (status, allow, _, body) = create_from(&app, DASHBOARD).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["result"]["id"].is_string(), "{body}");
    assert_eq!(allow, None);
}

#[tokio::test]
async fn allowed_origins_get_cors_headers_and_others_do_not() {
    let app = spawn_app_with(&["--cors-allowed-origins", &format!("{DASHBOARD}, http://other.example")]).await;
    let response = preflight(&app, DASHBOARD).await;
    assert_eq!(response.status().as_u16(), 200);
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_lowercase());
    assert_eq!(header("access-control-allow-origin").as_deref(), Some(DASHBOARD));
    let methods = header("access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("post") && methods.contains("get"), "{methods}");
    let headers = header("access-control-allow-headers").unwrap_or_default();
    for needed in ["authorization", "content-type", "idempotency-key", "x-workspace-id", "x-request-id", "traceparent"]
    {
        assert!(headers.contains(needed), "preflight allows {needed}: {headers}");
    }
    assert_eq!(header("access-control-allow-credentials"), None, "tokens are not cookies");
    assert!(header("access-control-max-age").is_some());

    let response = preflight(&app, ELSEWHERE).await;
    assert!(response.headers().get("access-control-allow-origin").is_none(), "another origin is not allowed");

    let (status, allow, expose, body) = create_from(&app, DASHBOARD).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(allow.as_deref(), Some(DASHBOARD));
    assert!(expose.is_some_and(|e| e.to_lowercase().contains("x-request-id")), "the page may read the request id");
    let (status, allow, _, _) = create_from(&app, ELSEWHERE).await;
    assert_eq!((status, allow), (200, None), "answered, but a browser keeps it from the page");
}

#[tokio::test]
async fn any_origin_with_a_lone_star() {
    let app = spawn_app_with(&["--cors-allowed-origins", "*"]).await;
    let response = preflight(&app, ELSEWHERE).await;
    assert_eq!(response.headers().get("access-control-allow-origin").unwrap(), "*");
    let bearer = format!("Authorization: Bearer {}", app.token());
    let (status, _, _) = ws_handshake(app.addr, "/", &[&bearer, &origin_header(ELSEWHERE)]).await;
    assert_eq!(status, 101);
}

#[tokio::test]
async fn websocket_handshakes_from_origins_not_allowed_are_forbidden() {
    let app = spawn_app_with(&["--cors-allowed-origins", DASHBOARD]).await;
    let bearer = format!("Authorization: Bearer {}", app.token());
    let query = format!("/?access_token={}", app.token());

    // Not a browser (no Origin): as before.
    let (status, _, _) = ws_handshake(app.addr, "/", &[&bearer]).await;
    assert_eq!(status, 101);
    // The allowed page, with the token in the header or (as browsers must) in the query.
    let (status, _, _) = ws_handshake(app.addr, "/", &[&bearer, &origin_header(DASHBOARD)]).await;
    assert_eq!(status, 101);
    let (status, _, _) = ws_handshake(app.addr, &query, &[&origin_header(DASHBOARD)]).await;
    assert_eq!(status, 101);

    // Another page: 403 in §4's shape, naming the setting.
    for headers in [vec![bearer.clone(), origin_header(ELSEWHERE)], vec![origin_header("null")]] {
        let path = if headers.len() == 1 { query.as_str() } else { "/" };
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let (status, body, _) = ws_handshake(app.addr, path, &headers).await;
        assert_eq!(status, 403, "{headers:?}");
        let body: Value = serde_json::from_slice(&body).expect("a JSON-RPC error body");
        assert_eq!(body["error"]["code"], -32003, "{body}");
        assert_eq!(body["error"]["data"]["code"], "FORBIDDEN", "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("CORS_ALLOWED_ORIGINS"), "{body}");
    }
    // Without a valid token the answer stays 401, whatever the origin (CONTRACT §2).
    let (status, _, _) = ws_handshake(app.addr, "/", &[&origin_header(ELSEWHERE)]).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn websocket_handshakes_from_browsers_are_forbidden_by_default() {
    let app = spawn_app().await;
    let bearer = format!("Authorization: Bearer {}", app.token());
    let (status, _, _) = ws_handshake(app.addr, "/", &[&bearer, &origin_header(DASHBOARD)]).await;
    assert_eq!(status, 403, "no browser origin is allowed until CORS_ALLOWED_ORIGINS names it");
    let (status, _, _) = ws_handshake(app.addr, "/", &[&bearer]).await;
    assert_eq!(status, 101, "clients that are not browsers are not affected");
}

#[test]
fn a_setting_that_is_not_an_origin_stops_the_service_at_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_opportunity-service"))
        .args(["serve", "--listen-addr", "127.0.0.1:0"])
        .env("CORS_ALLOWED_ORIGINS", "https://crm.example.com/app")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(log.contains("is not an origin") && log.contains("cors-allowed-origins"), "{log}");
}

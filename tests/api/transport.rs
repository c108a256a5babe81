//! CONTRACT.md §2 (transport) and the transport rows of §4 (errors), with the limits of §1
//! (`MAX_REQUEST_BYTES`, `MAX_BATCH`) and the connection limit: JSON-RPC over HTTP and
//! WebSocket, batches, notifications, ids, params shapes, health and readiness, and many calls
//! at once.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use jsonrpsee::core::ClientError;
use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::params::BatchRequestBuilder;
use serde_json::{Value, json};

use crate::helpers::*;

const CREATE: &str = "opportunity.create";

/// The answer of a batch, indexed by id (as JSON text); ids must be unique.
#[track_caller]
fn by_id(answers: &Value) -> std::collections::HashMap<String, Value> {
    let items = answers.as_array().unwrap_or_else(|| panic!("a batch is answered with an array: {answers}"));
    let mut map = std::collections::HashMap::new();
    for item in items {
        assert_eq!(item["jsonrpc"], "2.0", "{item}");
        let key = item["id"].to_string();
        assert!(map.insert(key.clone(), item.clone()).is_none(), "two answers with id {key}: {answers}");
    }
    map
}

/// A JSON-RPC notification (no `id`).
fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

/// A create request padded (through `scopeSummary`) to exactly `len` bytes.
fn create_body_of_len(len: usize) -> String {
    let mut params = valid_params();
    params["scopeSummary"] = json!("");
    let base = request(json!(1), CREATE, params.clone()).to_string();
    assert!(base.len() <= len, "a create is {} bytes already", base.len());
    params["scopeSummary"] = json!("x".repeat(len - base.len()));
    let body = request(json!(1), CREATE, params).to_string();
    assert_eq!(body.len(), len);
    body
}

/// Whether a body answers nothing: empty, or at least neither an answer object nor an array of
/// answers.
fn is_no_answer(body: &Value) -> bool {
    match body {
        Value::String(text) => text.trim().is_empty() || serde_json::from_str::<Value>(text).is_err(),
        Value::Null => true,
        Value::Array(_) => false,
        Value::Object(obj) => !(obj.contains_key("result") || obj.contains_key("error") || obj.contains_key("id")),
        _ => true,
    }
}

// --- §4: the transport rows ---------------------------------------------------------------------

#[tokio::test]
async fn body_that_is_not_json_is_a_parse_error() {
    let app = spawn_app().await;
    let auth = app.bearer();
    for body in [
        "not json",
        "{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"opportunity.create\",",
        "[{\"jsonrpc\": \"2.0\", \"id\": 1",
        "{'jsonrpc': '2.0'}",
        "",
    ] {
        let (status, response) = app.post_raw(body.to_string(), &[("authorization", &auth)]).await;
        assert!(response.is_object(), "body {body:?}: HTTP {status}, not a JSON-RPC answer: {response}");
        assert_error(&response, &Value::Null, -32700, "PARSE_ERROR", "the answer");
    }
    assert_eq!(app.count(None).await, 0);
}

#[tokio::test]
async fn json_that_is_not_a_json_rpc_request_is_bad_request() {
    let app = spawn_app().await;
    let auth = app.bearer();
    let params = valid_params();
    // Bodies with no id to echo: the answer's id is null.
    let without_id = [
        json!({"foo": 1}),
        json!({"jsonrpc": "2.0"}),
        json!({"jsonrpc": "2.0", "params": params}),
        json!(5),
        json!("opportunity.create"),
        json!(null),
    ];
    for body in &without_id {
        let (status, response) = app.post_raw(body.to_string(), &[("authorization", &auth)]).await;
        assert!(response.is_object(), "body {body}: HTTP {status}, not a JSON-RPC answer: {response}");
        assert_error(&response, &Value::Null, -32600, "BAD_REQUEST", "the answer");
    }
    // Bodies with an id: JSON-RPC 2.0 allows the answer to carry it, or null when it could not be
    // told.
    let with_id = [
        json!({"id": 7, "method": CREATE, "params": params}),
        json!({"jsonrpc": "1.0", "id": 7, "method": CREATE, "params": params}),
        json!({"jsonrpc": 2.0, "id": 7, "method": CREATE, "params": params}),
        json!({"jsonrpc": "2.0", "id": 7, "method": 5, "params": params}),
        json!({"jsonrpc": "2.0", "id": 7, "method": ["opportunity.create"], "params": params}),
        json!({"jsonrpc": "2.0", "id": 7, "params": params}),
    ];
    for body in &with_id {
        let (status, response) = app.post_raw(body.to_string(), &[("authorization", &auth)]).await;
        assert!(response.is_object(), "body {body}: HTTP {status}, not a JSON-RPC answer: {response}");
        let id = if response["id"].is_null() { Value::Null } else { json!(7) };
        assert_error(&response, &id, -32600, "BAD_REQUEST", "the answer");
    }
    assert_eq!(app.count(None).await, 0, "nothing is created by invalid requests");
}

#[tokio::test]
async fn empty_batch_is_bad_request() {
    let app = spawn_app().await;
    let auth = app.bearer();
    for body in ["[]", "[ ]", " \n[]"] {
        let (status, response) = app.post_raw(body.to_string(), &[("authorization", &auth)]).await;
        assert!(response.is_object(), "body {body:?}: HTTP {status}, expected one error object: {response}");
        assert_error(&response, &Value::Null, -32600, "BAD_REQUEST", "the answer");
    }
}

#[tokio::test]
async fn body_over_max_request_bytes_is_refused_with_413() {
    let app = spawn_app_with(&["--max-request-bytes", "1000"]).await;
    let auth = app.bearer();
    for len in [2000, 1001] {
        let body = create_body_of_len(len);
        let (status, response) = app.post_raw(body, &[("authorization", &auth)]).await;
        assert_eq!(status, 413, "a {len}-byte body: {response}");
        assert_error(&response, &Value::Null, -32013, "PAYLOAD_TOO_LARGE", "the answer");
    }
    // A batch over the byte limit is refused the same way.
    let big = create_body_of_len(600);
    let big: Value = serde_json::from_str(&big).unwrap();
    let mut second = big.clone();
    second["id"] = json!(2);
    let batch = json!([big, second]).to_string();
    assert!(batch.len() > 1000);
    let (status, response) = app.post_raw(batch, &[("authorization", &auth)]).await;
    assert_eq!(status, 413, "{response}");
    assert_error(&response, &Value::Null, -32013, "PAYLOAD_TOO_LARGE", "the answer");
    assert_eq!(app.count(None).await, 0, "refused bodies create nothing");
}

#[tokio::test]
async fn body_within_max_request_bytes_is_processed() {
    let app = spawn_app_with(&["--max-request-bytes", "1000"]).await;
    let auth = app.bearer();
    // Just under the limit, and exactly at it ("larger bodies are refused").
    for len in [990, 1000] {
        let body = create_body_of_len(len);
        let (status, response) = app.post_raw(body, &[("authorization", &auth)]).await;
        assert_eq!(status, 200, "a {len}-byte body: {response}");
        assert_created(&response, &json!(1), "the answer");
    }
    assert_eq!(app.count(None).await, 2);
}

#[tokio::test]
async fn batch_over_max_batch_is_payload_too_large() {
    let app = spawn_app_with(&["--max-batch", "3"]).await;
    let token = app.token();
    let four: Vec<Value> = (1..=4).map(|i| request(json!(i), CREATE, valid_params())).collect();
    let (status, response) = app.post(&json!(four), &token).await;
    assert!(response.is_object(), "HTTP {status}: expected one error object for the whole batch: {response}");
    assert_error(&response, &Value::Null, -32013, "PAYLOAD_TOO_LARGE", "the answer");
    assert_eq!(app.count(None).await, 0, "no call of a refused batch runs");

    let three: Vec<Value> = (1..=3).map(|i| request(json!(i), CREATE, valid_params())).collect();
    let (status, response) = app.post(&json!(three), &token).await;
    assert_eq!(status, 200, "{response}");
    let answers = by_id(&response);
    assert_eq!(answers.len(), 3, "{response}");
    for i in 1..=3 {
        assert_created(&answers[&json!(i).to_string()], &json!(i), "the answer");
    }
    assert_eq!(app.count(None).await, 3);
}

#[tokio::test]
async fn unknown_method_is_not_found() {
    let app = spawn_app().await;
    let token = app.token();
    for method in ["opportunity.delete", "opportunity", "nope", "opportunity.create.x", ""] {
        let (status, response) = app.post(&request(json!(11), method, valid_params()), &token).await;
        assert!(response.is_object(), "method {method:?}: HTTP {status}: {response}");
        assert_error(&response, &json!(11), -32601, "NOT_FOUND", "the answer");
    }
    assert_eq!(app.count(None).await, 0);
}

#[tokio::test]
async fn invalid_params_is_bad_request_with_flattened_errors() {
    let app = spawn_app().await;
    let mut params = valid_params();
    params["title"] = json!("   ");
    params["probability"] = json!(101);
    let (_, response) = app.post(&request(json!("p"), CREATE, params), &app.token()).await;
    assert_error(&response, &json!("p"), -32602, "BAD_REQUEST", "the answer");
    let data = &response["error"]["data"];
    let field_errors = data["fieldErrors"].as_object().expect("fieldErrors object");
    for field in ["title", "probability"] {
        let messages = field_errors
            .get(field)
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("fieldErrors.{field}: {response}"));
        assert!(!messages.is_empty() && messages.iter().all(Value::is_string));
    }
    assert!(data["formErrors"].is_array(), "{response}");
    assert_eq!(app.count(None).await, 0);
}

// --- §2: batches, notifications, ids, params ----------------------------------------------------

#[tokio::test]
async fn batch_is_answered_per_item_by_id() {
    let app = spawn_app().await;
    let mut bad = valid_params();
    bad["title"] = json!("");
    let mut bad_notification = valid_params();
    bad_notification["probability"] = json!(-1);
    let batch = json!([
        request(json!("bad"), CREATE, bad),
        5,
        notification(CREATE, bad_notification),
        request(json!(3), "opportunity.nope", valid_params()),
        request(json!(1), CREATE, valid_params()),
    ]);
    let (status, response) = app.post(&batch, &app.token()).await;
    assert_eq!(status, 200, "{response}");
    let answers = by_id(&response);
    assert_eq!(
        answers.len(),
        4,
        "four answers: three calls and the invalid entry, none for the notification: {response}"
    );
    assert_created(&answers["1"], &json!(1), "the answer");
    assert_error(&answers["\"bad\""], &json!("bad"), -32602, "BAD_REQUEST", "the answer");
    assert!(answers["\"bad\""]["error"]["data"]["fieldErrors"]["title"].is_array(), "{response}");
    assert_error(&answers["3"], &json!(3), -32601, "NOT_FOUND", "the answer");
    assert_error(&answers["null"], &Value::Null, -32600, "BAD_REQUEST", "the answer");
    assert_eq!(app.count(None).await, 1, "only the good create is stored");
}

#[tokio::test]
async fn batch_with_leading_whitespace_is_a_batch() {
    let app = spawn_app().await;
    let batch = json!([request(json!(1), CREATE, valid_params()), request(json!(2), CREATE, valid_params()),]);
    let body = format!(" \r\n\t{batch}");
    let auth = app.bearer();
    let (status, response) = app.post_raw(body, &[("authorization", &auth)]).await;
    assert_eq!(status, 200, "{response}");
    let answers = by_id(&response);
    assert_eq!(answers.len(), 2, "{response}");
    assert_created(&answers["1"], &json!(1), "the answer");
    assert_created(&answers["2"], &json!(2), "the answer");
}

#[tokio::test]
async fn batch_of_only_notifications_gets_no_answers() {
    let app = spawn_app().await;
    let mut bad = valid_params();
    bad["title"] = json!("");
    let batch = json!([notification(CREATE, bad), notification("opportunity.nope", json!({})),]);
    let (status, response) = app.post(&batch, &app.token()).await;
    assert!((200..300).contains(&status), "a batch of notifications is not an error: HTTP {status} {response}");
    assert!(is_no_answer(&response), "notifications get no answer: HTTP {status} {response}");
    assert_eq!(app.count(None).await, 0);
}

#[tokio::test]
async fn single_notification_gets_no_answer() {
    let app = spawn_app().await;
    let token = app.token();
    for body in [notification("opportunity.nope", json!({})), notification(CREATE, json!({"title": ""}))] {
        let (status, response) = app.post(&body, &token).await;
        assert!((200..300).contains(&status), "a notification is not an error: HTTP {status} {response}");
        assert!(is_no_answer(&response), "a notification gets no answer: HTTP {status} {response}");
    }
}

#[tokio::test]
async fn ids_of_every_type_are_echoed() {
    let app = spawn_app().await;
    let token = app.token();
    let ids = [json!("abc-123"), json!(""), json!(42), json!(0), json!(9007199254740993_u64), Value::Null];
    for id in &ids {
        let (status, response) = app.post(&request(id.clone(), CREATE, valid_params()), &token).await;
        assert_eq!(status, 200, "id {id}: {response}");
        assert_created(&response, id, "the answer");
        // Errors echo the id too.
        let (_, response) = app.post(&request(id.clone(), "opportunity.nope", json!({})), &token).await;
        assert_error(&response, id, -32601, "NOT_FOUND", "the answer");
    }
    // And so does a batch, per item.
    let batch = json!([
        request(json!("s"), CREATE, valid_params()),
        request(json!(8), CREATE, valid_params()),
        request(Value::Null, CREATE, valid_params()),
    ]);
    let (_, response) = app.post(&batch, &token).await;
    let answers = by_id(&response);
    assert_eq!(answers.len(), 3, "{response}");
    assert_created(&answers["\"s\""], &json!("s"), "the answer");
    assert_created(&answers["8"], &json!(8), "the answer");
    assert_created(&answers["null"], &Value::Null, "the answer");
    assert_eq!(app.count(None).await, ids.len() as i64 + 3);
}

/// JSON-RPC 2.0 ids are any JSON number; a negative one is a number like any other (it is neither
/// absent, which would make a notification, nor invalid).
#[tokio::test]
async fn negative_number_id_is_echoed() {
    let app = spawn_app().await;
    let token = app.token();
    let (status, response) = app.post(&request(json!(-9), CREATE, valid_params()), &token).await;
    assert_eq!(status, 200, "{response}");
    assert_created(&response, &json!(-9), "the answer");
    let (_, response) = app.post(&request(json!(-9), "opportunity.nope", json!({})), &token).await;
    assert_error(&response, &json!(-9), -32601, "NOT_FOUND", "the answer");
    let batch = json!([request(json!(-1), CREATE, valid_params()), request(json!(1), CREATE, valid_params()),]);
    let (_, response) = app.post(&batch, &token).await;
    let answers = by_id(&response);
    assert_eq!(answers.len(), 2, "both calls are answered: {response}");
    assert_created(&answers["-1"], &json!(-1), "the answer");
    assert_created(&answers["1"], &json!(1), "the answer");
    assert_eq!(app.count(None).await, 3);
}

#[tokio::test]
async fn params_as_object_or_one_element_array_both_create() {
    let app = spawn_app().await;
    let token = app.token();
    let (status, by_name) = app.post(&request(json!(1), CREATE, valid_params()), &token).await;
    assert_eq!(status, 200, "{by_name}");
    let first = assert_created(&by_name, &json!(1), "the answer");
    let (status, wrapped) = app.post(&request(json!(2), CREATE, json!([valid_params()])), &token).await;
    assert_eq!(status, 200, "{wrapped}");
    let second = assert_created(&wrapped, &json!(2), "the answer");
    assert_ne!(first, second);
    // The two answers describe the same input.
    for field in ["customerId", "title", "pipelineType", "stage", "workspaceId"] {
        assert_eq!(by_name["result"][field], wrapped["result"][field], "{field}");
    }
    assert_eq!(app.count(Some(app.workspace)).await, 2);
}

// --- §2: health, readiness, content type --------------------------------------------------------

#[tokio::test]
async fn health_and_ready_answer_200() {
    let app = spawn_app().await;
    for path in ["health", "ready"] {
        let response = app.http.get(format!("{}{path}", app.url())).send().await.expect("request sent");
        assert_eq!(response.status().as_u16(), 200, "GET /{path}");
    }
}

#[tokio::test]
async fn post_with_text_plain_is_refused_with_415() {
    let app = spawn_app().await;
    let body = request(json!(1), CREATE, valid_params()).to_string();
    let response = app
        .http
        .post(app.url())
        .header("content-type", "text/plain")
        .header("authorization", app.bearer())
        .body(body)
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(status, 415, "{text}");
    assert_eq!(app.count(None).await, 0, "a refused request creates nothing");
}

// --- §2: WebSocket ------------------------------------------------------------------------------

#[tokio::test]
async fn websocket_create_works() {
    let app = spawn_app().await;
    let client = app.ws(&[("authorization", &app.bearer())]).await;
    let result = ws_create(&client, &valid_params()).await.expect("create over WebSocket");
    assert_eq!(result["title"], "Chiller retrofit, Building C", "{result}");
    assert_eq!(result["workspaceId"], app.workspace.to_string(), "{result}");
    assert_eq!(result["createdBy"], app.user.to_string(), "{result}");
    // The same connection serves further calls.
    let again = ws_create(&client, &valid_params()).await.expect("second create");
    assert_ne!(result["id"], again["id"]);
    assert_eq!(app.count(Some(app.workspace)).await, 2);
}

#[tokio::test]
async fn websocket_validation_error_has_the_invalid_params_envelope() {
    let app = spawn_app().await;
    let client = app.ws(&[("authorization", &app.bearer())]).await;
    let mut params = valid_params();
    params["title"] = json!("");
    params["probability"] = json!(101);
    let (code, data) = ws_error(ws_create(&client, &params).await);
    assert_eq!(code, -32602, "{data}");
    assert_eq!(data["code"], "BAD_REQUEST", "{data}");
    assert_eq!(data["httpStatus"], 400, "{data}");
    assert!(data["fieldErrors"]["title"].is_array(), "{data}");
    assert!(data["fieldErrors"]["probability"].is_array(), "{data}");
    assert!(data["formErrors"].is_array(), "{data}");
    assert_eq!(app.count(None).await, 0);
}

#[tokio::test]
async fn websocket_unknown_method_is_not_found() {
    let app = spawn_app().await;
    let client = app.ws(&[("authorization", &app.bearer())]).await;
    let result: Result<Value, ClientError> = client.request("opportunity.nope", jsonrpsee::rpc_params![]).await;
    let (code, data) = ws_error(result);
    assert_eq!(code, -32601, "{data}");
    assert_eq!(data["code"], "NOT_FOUND", "{data}");
    assert_eq!(data["httpStatus"], 404, "{data}");
    // The connection survives the error.
    ws_create(&client, &valid_params()).await.expect("create after an error");
}

#[tokio::test]
async fn websocket_batch_is_answered_per_item() {
    let app = spawn_app().await;
    let client = app.ws(&[("authorization", &app.bearer())]).await;
    let mut bad = valid_params();
    bad["title"] = json!("");
    let mut batch = BatchRequestBuilder::new();
    batch.insert(CREATE, valid_params().as_object().unwrap().clone()).unwrap();
    batch.insert(CREATE, bad.as_object().unwrap().clone()).unwrap();
    batch.insert("opportunity.nope", serde_json::Map::new()).unwrap();
    let answers = client.batch_request::<Value>(batch).await.expect("batch over WebSocket");
    // The client matches answers to calls by id and returns them in call order.
    let answers: Vec<_> = answers.into_iter().collect();
    assert_eq!(answers.len(), 3, "{answers:?}");
    let created = answers[0].as_ref().expect("the good create succeeds");
    assert_eq!(created["title"], "Chiller retrofit, Building C");
    let invalid = answers[1].as_ref().expect_err("the bad create fails");
    assert_eq!(invalid.code(), -32602);
    let data: Value = serde_json::from_str(invalid.data().expect("data").get()).unwrap();
    assert_eq!(data["code"], "BAD_REQUEST", "{data}");
    assert_eq!(data["httpStatus"], 400, "{data}");
    assert!(data["fieldErrors"]["title"].is_array(), "{data}");
    let unknown = answers[2].as_ref().expect_err("the unknown method fails");
    assert_eq!(unknown.code(), -32601);
    let data: Value = serde_json::from_str(unknown.data().expect("data").get()).unwrap();
    assert_eq!(data["code"], "NOT_FOUND", "{data}");
    assert_eq!(data["httpStatus"], 404, "{data}");
    assert_eq!(app.count(None).await, 1);
}

// --- connection limit ---------------------------------------------------------------------------

#[tokio::test]
async fn connection_limit_refuses_calls_but_not_health() {
    let app = spawn_app_with(&["--max-connections", "1"]).await;
    let token = app.token();
    let client = app.ws(&[("authorization", &app.bearer())]).await;
    ws_create(&client, &valid_params()).await.expect("the held connection works");

    let (status, response) = app.post(&request(json!(1), CREATE, valid_params()), &token).await;
    assert_eq!(status, 429, "a call beyond the connection limit is refused: {response}");
    for path in ["health", "ready"] {
        let health = app.http.get(format!("{}{path}", app.url())).send().await.expect("request sent");
        assert_eq!(health.status().as_u16(), 200, "GET /{path} is answered regardless of the limit");
    }
    assert_eq!(app.count(None).await, 1, "the refused call created nothing");

    // Once the WebSocket is closed, calls are served again.
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, response) = app.post(&request(json!(2), CREATE, valid_params()), &token).await;
        if status == 200 {
            assert_created(&response, &json!(2), "the answer");
            break;
        }
        assert_eq!(status, 429, "{response}");
        assert!(Instant::now() < deadline, "calls are still refused after the WebSocket closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.count(None).await, 2);
}

// --- many calls at once -------------------------------------------------------------------------

#[tokio::test]
async fn two_hundred_concurrent_creates_all_succeed() {
    let app = spawn_app().await;
    let token = app.token();
    let calls = (0..200).map(|i| {
        let body = request(json!(i), CREATE, valid_params());
        let app = &app;
        let token = &token;
        async move { app.post(&body, token).await }
    });
    let answers = futures_util::future::join_all(calls).await;
    let mut ids = HashSet::new();
    for (i, (status, response)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "call {i}: {response}");
        ids.insert(id(assert_created(response, &json!(i), "the answer")).to_string());
    }
    assert_eq!(ids.len(), 200, "every create has an id of its own");
    assert_eq!(app.count(None).await, 200);
    assert_eq!(app.count(Some(app.workspace)).await, 200);
}

#[tokio::test]
async fn notifications_are_executed_without_an_answer() {
    let app = spawn_app().await;
    let token = app.token();
    let notification = json!({"jsonrpc": "2.0", "method": CREATE, "params": valid_params()});
    let (status, body) = app.post(&notification, &token).await;
    assert_eq!(status, 204, "a notification is answered with no content: {body}");
    assert_eq!(body, json!(""), "no body at all");
    let batch = json!([notification.clone(), notification]);
    let (status, body) = app.post(&batch, &token).await;
    assert_eq!(status, 204, "a batch of notifications is answered with no content: {body}");
    assert_eq!(body, json!(""), "no body at all");
    assert_eq!(app.count(None).await, 3, "JSON-RPC 2.0 processes notifications");
}

/// An answer over MAX_RESPONSE_BYTES, of a single call or of a whole batch, is an error in §4's
/// shape (INTERNAL_SERVER_ERROR with a request id), not jsonrpsee's own -32008/-32011.
#[tokio::test]
async fn answers_over_max_response_bytes_are_refused_in_the_contracts_shape() {
    let app = spawn_app_with(&["--max-response-bytes", "3000"]).await;
    let token = app.token();
    for _ in 0..5 {
        assert!(app.create(valid_params()).await.get("result").is_some());
    }
    // One opportunity is about 900 bytes of JSON.
    let list = |id: i64, limit: i64| request(json!(id), "opportunity.list", json!({"limit": limit}));
    let batch = json!([list(1, 2), list(2, 2)]);
    let single = list(3, 5);
    for body in [batch, single] {
        let (status, response) = app.post(&body, &token).await;
        assert_eq!(status, 200, "{response}");
        let error = &response["error"];
        assert_eq!(error["code"], -32603, "{body}: {response}");
        assert_eq!(error["data"]["code"], "INTERNAL_SERVER_ERROR", "{response}");
        assert_eq!(error["data"]["httpStatus"], 500, "{response}");
        assert!(error["data"]["requestId"].is_string(), "{response}");
    }
    // Within the limit, the same batch is answered.
    let (_, response) = app.post(&json!([list(4, 1)]), &token).await;
    assert!(response[0]["result"]["items"].is_array(), "{response}");
}

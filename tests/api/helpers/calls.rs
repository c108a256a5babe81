//! Calls as bytes on the wire: JSON-RPC requests built by hand and sent over HTTP, a WebSocket
//! client or a raw socket, answered as JSON values for the envelope assertions.

use std::net::SocketAddr;
use std::time::Duration;

use jsonrpsee::ws_client::WsClient;
use serde_json::{Value, json};

use super::{TestApp, ok};

/// The minimal valid params of `opportunity.create`.
pub fn valid_params() -> Value {
    json!({
        "customerId": "550e8400-e29b-41d4-a716-446655440000",
        "title": "Chiller retrofit, Building C",
        "pipelineType": "retrofit",
    })
}

/// A JSON-RPC request object.
pub fn request(id: Value, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// Calls `method` over HTTP with `token` (request id 1); returns the whole response.
pub async fn call(app: &TestApp, token: &str, method: &str, params: Value) -> Value {
    app.post(&request(json!(1), method, params), token).await.1
}

/// Creates an opportunity from the valid params with `extra` fields over them; returns it.
pub async fn create(app: &TestApp, token: &str, extra: Value) -> Value {
    let mut params = valid_params();
    params.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    ok(&call(app, token, "opportunity.create", params).await).clone()
}

/// The id of an opportunity in an answer.
#[track_caller]
pub fn id(o: &Value) -> &str {
    o["id"].as_str().unwrap_or_else(|| panic!("an id expected: {o}"))
}

/// An `opportunity.create` POST to `addr` with a bearer token, ready for more headers.
pub fn create_request(
    http: &reqwest::Client,
    addr: SocketAddr,
    token: &str,
    params: &Value,
) -> reqwest::RequestBuilder {
    http.post(format!("http://{addr}/"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(request(json!(1), "opportunity.create", params.clone()).to_string())
}

/// Calls `opportunity.create` over a WebSocket client with the params object as it is.
pub async fn ws_create(client: &WsClient, params: &Value) -> Result<Value, jsonrpsee::core::ClientError> {
    use jsonrpsee::core::client::ClientT;
    let mut object = jsonrpsee::core::params::ObjectParams::new();
    for (k, v) in params.as_object().expect("params object") {
        object.insert(k, v).unwrap();
    }
    client.request("opportunity.create", object).await
}

/// A WebSocket handshake sent by hand to `path` with extra header lines (each `Name: value`);
/// returns the HTTP status, the body the server sent with it (when it refused) and the stream.
pub async fn ws_handshake(addr: SocketAddr, path: &str, headers: &[&str]) -> (u16, Vec<u8>, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for line in headers {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let length = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok()).flatten()
            });
            let body_start = end + 4;
            if status == 101 || length.is_none_or(|n| buf.len() - body_start >= n) {
                let body = buf[body_start..].to_vec();
                return (status, body, stream);
            }
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            other => panic!("no complete handshake answer: {other:?}; got {:?}", String::from_utf8_lossy(&buf)),
        }
    }
}

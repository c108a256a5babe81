//! Workspace-aware auth (CONTRACT.md §3) with the error envelopes of §4: which tokens are
//! refused, which scopes a create needs, which workspace a call acts in, the same rules over a
//! WebSocket, and the development secret and `token` subcommand of §1.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use opportunity_service::auth::{ALL_SCOPES, Claims, LEEWAY_SECONDS};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::*;

const BIN: &str = env!("CARGO_BIN_EXE_opportunity-service");

// ---------------------------------------------------------------------------------------------
// Helpers of this file
// ---------------------------------------------------------------------------------------------

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Base64url without padding (RFC 7515), for hand-built tokens.
fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Claims as JSON, signed with the test secret and `alg`.
fn sign_json(claims: &Value, alg: Algorithm) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(SECRET.as_bytes()))
        .expect("token encodes")
}

/// Valid claims for the app's user in its one workspace, as JSON to be bent by a test.
fn base_claims(app: &TestApp) -> Value {
    json!({
        "sub": app.user.to_string(),
        "workspaces": [app.workspace.to_string()],
        "scope": ALL_SCOPES,
        "exp": now() + 3600,
    })
}

/// An unsigned token (`alg` as given, empty signature) built by hand.
fn unsigned_token(alg: &str, claims: &Value) -> String {
    let header = json!({"alg": alg, "typ": "JWT"});
    format!("{}.{}.", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()))
}

/// `opportunity.create` over HTTP with exactly the given headers.
async fn call(app: &TestApp, headers: &[(&str, &str)], params: Value) -> Value {
    let body = request(json!(1), "opportunity.create", params).to_string();
    app.post_raw(body, headers).await.1
}

/// `opportunity.create` over HTTP with a bearer token and the valid params.
async fn call_with_token(app: &TestApp, token: &str) -> Value {
    let auth = format!("Bearer {token}");
    call(app, &[("authorization", &auth)], valid_params()).await
}

#[track_caller]
fn assert_unauthorized(response: &Value, case: &str) {
    assert_error(response, &json!(1), -32001, "UNAUTHORIZED", case);
}

#[track_caller]
fn assert_forbidden(response: &Value, case: &str) {
    assert_error(response, &json!(1), -32003, "FORBIDDEN", case);
}

/// Asserts -32602 BAD_REQUEST with at least one message on `fieldErrors.workspaceId`.
#[track_caller]
fn assert_workspace_field_error(response: &Value, case: &str) {
    assert_error(response, &json!(1), -32602, "BAD_REQUEST", case);
    let messages = response["error"]["data"]["fieldErrors"]["workspaceId"]
        .as_array()
        .unwrap_or_else(|| panic!("{case}: no fieldErrors.workspaceId in {response}"));
    assert!(
        !messages.is_empty() && messages.iter().all(|m| m.as_str().is_some_and(|s| !s.is_empty())),
        "{case}: {response}"
    );
}

/// Asserts a successful create in `workspace`; returns the result.
#[track_caller]
fn assert_created_in(response: &Value, workspace: Uuid, case: &str) -> Value {
    let result = assert_created(response, &json!(1), case);
    assert_eq!(result["workspaceId"], json!(workspace.to_string()), "{case}: {response}");
    result.clone()
}

/// A command for the binary with no auth settings inherited from the test's environment.
fn bin(database_url: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("AUTH_JWT_SECRET")
        .env_remove("AUTH_JWT_ISSUER")
        .env_remove("AUTH_JWT_AUDIENCE")
        .env_remove("LOG_FORMAT")
        .env("DATABASE_URL", database_url);
    cmd
}

/// Starts `serve` on `database_url` with no AUTH_JWT_SECRET and waits for its address.
fn start_without_secret(database_url: &str) -> ServiceProcess {
    ServiceProcess::spawn(bin(database_url))
}

/// Runs `opportunity-service token …` with no secret configured (a development secret is made
/// beside the database first, as `serve` would); returns the printed token.
fn mint_with_cli(database_url: &str, args: &[&str]) -> String {
    let path = std::path::Path::new(database_url.trim_start_matches("sqlite://"));
    opportunity_service::auth::load_or_create_dev_secret(&opportunity_service::dev_secret_path(path)).unwrap();
    let output = bin(database_url).arg("token").args(args).output().expect("token subcommand runs");
    assert!(output.status.success(), "token {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token:?}");
    token
}

/// Decodes a token with `secret`, HS256 only, without issuer or audience checks.
fn decode(token: &str, secret: &str) -> Value {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_aud = false;
    validation.leeway = 0;
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(secret.as_bytes()), &validation)
        .unwrap_or_else(|e| panic!("token {token} does not verify with the secret: {e}"))
        .claims
}

async fn post_to(addr: std::net::SocketAddr, token: &str, params: Value) -> Value {
    let body = request(json!(1), "opportunity.create", params);
    reqwest::Client::new()
        .post(format!("http://{addr}/"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(body.to_string())
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("JSON answer")
}

// ---------------------------------------------------------------------------------------------
// Tokens that are refused: UNAUTHORIZED, nothing written
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn missing_authorization_header_is_unauthorized() {
    let app = spawn_app().await;
    let response = call(&app, &[], valid_params()).await;
    assert_unauthorized(&response, "no Authorization header");
    // Even naming a granted workspace does not stand in for a token.
    let ws = app.workspace.to_string();
    let response = call(&app, &[("x-workspace-id", &ws)], valid_params()).await;
    assert_unauthorized(&response, "X-Workspace-Id but no Authorization");
    assert_eq!(app.count(None).await, 0);
}

#[tokio::test]
async fn authorization_that_is_not_bearer_is_unauthorized() {
    let app = spawn_app().await;
    let token = app.token();
    let cases = [
        ("Basic", "Basic dXNlcjpwYXNzd29yZA==".to_string()),
        ("Basic with a valid JWT", format!("Basic {token}")),
        ("Token scheme", format!("Token {token}")),
        ("JWT without a scheme", token.clone()),
        ("Bearer without a token", "Bearer".to_string()),
        ("Bearer glued to the token", format!("Bearer{token}")),
    ];
    for (case, header) in &cases {
        let response = call(&app, &[("authorization", header)], valid_params()).await;
        assert_unauthorized(&response, case);
    }
    assert_eq!(app.count(None).await, 0);
}

#[tokio::test]
async fn malformed_tokens_are_unauthorized() {
    let app = spawn_app().await;
    let good = app.token();
    let parts: Vec<&str> = good.split('.').collect();
    let cases = [
        ("random text", "not-a-token".to_string()),
        ("three junk segments", "not.a.jwt".to_string()),
        ("two segments", format!("{}.{}", parts[0], parts[1])),
        ("four segments", format!("{good}.{}", parts[2])),
        ("header that is not JSON", format!("{}.{}.{}", b64url(b"{not json"), parts[1], parts[2])),
        ("payload that is not JSON", format!("{}.{}.{}", parts[0], b64url(b"[1,2"), parts[2])),
        ("payload that is not base64url", format!("{}.%%%.{}", parts[0], parts[2])),
    ];
    for (case, token) in &cases {
        let response = call_with_token(&app, token).await;
        assert_unauthorized(&response, case);
    }
    assert_eq!(app.count(None).await, 0);
}

#[tokio::test]
async fn token_signed_with_another_key_is_unauthorized() {
    let app = spawn_app().await;
    let claims = base_claims(&app);
    let other =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"some-other-secret"))
            .unwrap();
    assert_unauthorized(&call_with_token(&app, &other).await, "another key");

    // A valid token whose payload was swapped (the signature no longer matches).
    let good = app.token();
    let parts: Vec<&str> = good.split('.').collect();
    let mut forged = claims.clone();
    forged["workspaces"] = json!([Uuid::new_v4().to_string(), app.workspace.to_string()]);
    let tampered = format!("{}.{}.{}", parts[0], b64url(forged.to_string().as_bytes()), parts[2]);
    assert_unauthorized(&call_with_token(&app, &tampered).await, "tampered payload");

    // The right header and payload with the signature of another valid token.
    let mut sibling = claims.clone();
    sibling["sub"] = json!(Uuid::new_v4().to_string());
    let sibling = sign_json(&sibling, Algorithm::HS256);
    let borrowed = format!("{}.{}.{}", parts[0], parts[1], sibling.rsplit('.').next().unwrap());
    assert_unauthorized(&call_with_token(&app, &borrowed).await, "another token's signature");
    assert_eq!(app.count(None).await, 0);
}

#[tokio::test]
async fn unsigned_alg_none_token_is_unauthorized() {
    let app = spawn_app().await;
    let claims = base_claims(&app);
    // Sanity: the same claims, signed properly, are accepted; only the algorithm differs below.
    for alg in ["none", "None", "NONE"] {
        let token = unsigned_token(alg, &claims);
        assert_unauthorized(&call_with_token(&app, &token).await, &format!("alg {alg}"));
    }
    // alg none with a signature segment that is not empty.
    let hs256 = sign_json(&claims, Algorithm::HS256);
    let with_sig = format!("{}{}", unsigned_token("none", &claims), hs256.rsplit('.').next().unwrap());
    assert_unauthorized(&call_with_token(&app, &with_sig).await, "alg none with a signature");
    assert_eq!(app.count(None).await, 0);
    let response = call_with_token(&app, &hs256).await;
    assert_created_in(&response, app.workspace, "the same claims with HS256");
}

#[tokio::test]
async fn hs384_and_hs512_with_the_right_secret_are_unauthorized() {
    let app = spawn_app().await;
    let claims = base_claims(&app);
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = sign_json(&claims, alg);
        assert_unauthorized(&call_with_token(&app, &token).await, &format!("{alg:?}"));
    }
    assert_eq!(app.count(None).await, 0);
}

#[tokio::test]
async fn expired_tokens_are_unauthorized() {
    let app = spawn_app().await;
    // The contract allows at most 60 s of leeway: two minutes past exp is expired anywhere.
    for (case, age) in [("expired 2 minutes ago", 120), ("expired an hour ago", 3600)] {
        let mut claims = base_claims(&app);
        claims["exp"] = json!(now() - age);
        let token = sign_json(&claims, Algorithm::HS256);
        assert_unauthorized(&call_with_token(&app, &token).await, case);
    }
    assert_eq!(app.count(None).await, 0);
}

/// RFC 7519 §2: a NumericDate may have a fraction (`time.time() + 3600` in Python makes one):
/// such `exp`, `nbf` and `iat` are read to the second, not refused as malformed. A claim that is
/// no number is refused, and the message names it.
#[tokio::test]
async fn numeric_dates_with_a_fraction_are_seconds() {
    let app = spawn_app().await;
    let t = now() as f64;
    for (case, exp, nbf, iat) in [
        ("exp with a fraction", json!(t + 3600.25), None, None),
        ("exp in exponent form", json!(1e10), None, None),
        ("nbf and iat with a fraction", json!(t + 3600.0), Some(json!(t - 0.5)), Some(json!(t - 0.75))),
        ("nbf null", json!(t + 3600.0), Some(Value::Null), None),
    ] {
        let mut claims = base_claims(&app);
        claims["exp"] = exp;
        if let Some(nbf) = nbf {
            claims["nbf"] = nbf;
        }
        if let Some(iat) = iat {
            claims["iat"] = iat;
        }
        let response = call_with_token(&app, &sign_json(&claims, Algorithm::HS256)).await;
        assert_created_in(&response, app.workspace, case);
    }
    for (case, claim, value, says) in [
        ("expired, with a fraction", "exp", json!(t - 120.5), "expired"),
        ("nbf ahead, with a fraction", "nbf", json!(t + 120.5), "not valid yet"),
        ("exp a string", "exp", json!("tomorrow"), "\"exp\""),
        ("exp null", "exp", Value::Null, "\"exp\""),
        ("exp beyond 64 bits", "exp", json!(1e300), "\"exp\""),
        ("iat a string", "iat", json!("now"), "\"iat\""),
    ] {
        let mut claims = base_claims(&app);
        claims[claim] = value;
        let response = call_with_token(&app, &sign_json(&claims, Algorithm::HS256)).await;
        assert_unauthorized(&response, case);
        let message = response["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{case}: the message says why: {response}");
    }
    let mut claims = base_claims(&app);
    claims.as_object_mut().unwrap().remove("exp");
    let response = call_with_token(&app, &sign_json(&claims, Algorithm::HS256)).await;
    assert_unauthorized(&response, "no exp");
    assert!(
        response["error"]["message"].as_str().unwrap_or_default().contains("lacks the claim \"exp\""),
        "{response}"
    );
    assert_eq!(app.count(None).await, 4);
}

/// §3: `nbf`, when present, refuses a token used before it (with at most 60 s of leeway).
#[tokio::test]
async fn tokens_used_before_their_nbf_are_unauthorized() {
    let app = spawn_app().await;
    for (case, ahead) in [("nbf in 2 minutes", 120), ("nbf in a day", 86_400)] {
        let mut claims = base_claims(&app);
        claims["nbf"] = json!(now() + ahead);
        let response = call_with_token(&app, &sign_json(&claims, Algorithm::HS256)).await;
        assert_unauthorized(&response, case);
        let message = response["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("not valid yet"), "{case}: the message says why: {response}");
    }
    let mut claims = base_claims(&app);
    claims["nbf"] = json!("tomorrow");
    assert_unauthorized(&call_with_token(&app, &sign_json(&claims, Algorithm::HS256)).await, "nbf not a number");
    assert_eq!(app.count(None).await, 0);
    for (case, ahead) in [("nbf a minute ago", -60), ("nbf now", 0), ("nbf 5 s ahead, within the leeway", 5)] {
        let mut claims = base_claims(&app);
        claims["nbf"] = json!(now() + ahead);
        assert_created_in(&call_with_token(&app, &sign_json(&claims, Algorithm::HS256)).await, app.workspace, case);
    }
}

/// RFC 7515 §4.1.11: a token whose header has `crit` names extensions that must be understood;
/// this service understands none, so every such token is refused, even one signed right.
#[tokio::test]
async fn tokens_with_a_crit_header_are_unauthorized() {
    let app = spawn_app().await;
    let claims = base_claims(&app);
    for (case, crit) in [
        ("crit of an unknown extension", json!(["x-acme-extension"])),
        ("crit exp", json!(["exp"])),
        ("crit b64", json!(["b64"])),
        ("empty crit", json!([])),
    ] {
        let header = json!({"alg": "HS256", "typ": "JWT", "crit": crit});
        let signing_input =
            format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        let signature = jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
            Algorithm::HS256,
        )
        .expect("signs");
        let token = format!("{signing_input}.{signature}");
        assert_unauthorized(&call_with_token(&app, &token).await, case);
    }
    assert_eq!(app.count(None).await, 0);
}

/// `Authorization` sent twice is refused, even with the same valid token twice: the first does
/// not silently win.
#[tokio::test]
async fn a_repeated_authorization_header_is_unauthorized() {
    let app = spawn_app().await;
    let good = format!("Bearer {}", app.token());
    let forged = format!("Bearer {}", sign(&claims(app.user, &[Uuid::new_v4()], ALL_SCOPES)));
    for (case, second) in [("the same token twice", good.as_str()), ("another token second", forged.as_str())] {
        let response = call(&app, &[("authorization", &good), ("authorization", second)], valid_params()).await;
        assert_unauthorized(&response, case);
        assert_eq!(
            response["error"]["message"], "Unauthorized: the Authorization header must be sent once",
            "{case}: {response}"
        );
    }
    assert_eq!(app.count(None).await, 0);
}

/// The scheme of `Authorization` is case-insensitive (RFC 7235 §2.1).
#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = spawn_app().await;
    let token = app.token();
    for scheme in ["Bearer", "bearer", "BEARER", "bEARER"] {
        let header = format!("{scheme} {token}");
        let response = call(&app, &[("authorization", &header)], valid_params()).await;
        assert_created_in(&response, app.workspace, scheme);
    }
}

/// A token that names one workspace twice has one workspace: a call need not name it.
#[tokio::test]
async fn a_workspace_named_twice_in_the_token_counts_once() {
    let app = spawn_app().await;
    let mut claims = base_claims(&app);
    let ws = app.workspace.to_string();
    claims["workspaces"] = json!([ws, ws, ws.to_uppercase()]);
    let response = call_with_token(&app, &sign_json(&claims, Algorithm::HS256)).await;
    assert_created_in(&response, app.workspace, "workspaces [A, A, A]");
    // Two distinct workspaces, one named twice: still two, so a call must name one.
    let other = Uuid::new_v4().to_string();
    claims["workspaces"] = json!([ws, other, ws]);
    let response = call_with_token(&app, &sign_json(&claims, Algorithm::HS256)).await;
    assert_workspace_field_error(&response, "workspaces [A, B, A], none named");
}

#[tokio::test]
async fn token_without_exp_is_unauthorized() {
    let app = spawn_app().await;
    let mut claims = base_claims(&app);
    claims.as_object_mut().unwrap().remove("exp");
    let token = sign_json(&claims, Algorithm::HS256);
    assert_unauthorized(&call_with_token(&app, &token).await, "no exp");
    let mut claims = base_claims(&app);
    claims["exp"] = Value::Null;
    let token = sign_json(&claims, Algorithm::HS256);
    assert_unauthorized(&call_with_token(&app, &token).await, "exp null");
    assert_eq!(app.count(None).await, 0);
}

#[tokio::test]
async fn token_without_a_uuid_sub_is_unauthorized() {
    let app = spawn_app().await;
    let mut cases = Vec::new();
    let mut missing = base_claims(&app);
    missing.as_object_mut().unwrap().remove("sub");
    cases.push(("no sub", missing));
    for (case, sub) in [
        ("sub not a UUID", json!("alice")),
        ("sub empty", json!("")),
        ("sub a number", json!(42)),
        ("sub null", Value::Null),
        ("sub a UUID with trailing junk", json!(format!("{}x", Uuid::new_v4()))),
    ] {
        let mut claims = base_claims(&app);
        claims["sub"] = sub;
        cases.push((case, claims));
    }
    for (case, claims) in &cases {
        let token = sign_json(claims, Algorithm::HS256);
        assert_unauthorized(&call_with_token(&app, &token).await, case);
    }
    assert_eq!(app.count(None).await, 0);
}

#[tokio::test]
async fn token_without_valid_workspaces_is_unauthorized() {
    let app = spawn_app().await;
    let ws = app.workspace.to_string();
    let mut cases = Vec::new();
    let mut missing = base_claims(&app);
    missing.as_object_mut().unwrap().remove("workspaces");
    cases.push(("no workspaces", missing));
    for (case, workspaces) in [
        ("workspaces empty", json!([])),
        ("workspaces holding a non-UUID", json!(["marketing"])),
        ("a good workspace and a non-UUID", json!([ws, "not-a-uuid"])),
        ("workspaces null", Value::Null),
        ("workspaces a string, not an array", json!(ws)),
        ("workspaces holding a number", json!([7])),
    ] {
        let mut claims = base_claims(&app);
        claims["workspaces"] = workspaces;
        cases.push((case, claims));
    }
    for (case, claims) in &cases {
        let token = sign_json(claims, Algorithm::HS256);
        assert_unauthorized(&call_with_token(&app, &token).await, case);
    }
    assert_eq!(app.count(None).await, 0);
}

// ---------------------------------------------------------------------------------------------
// Issuer and audience
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let app = spawn_app_with(&["--auth-jwt-issuer", "iss-a", "--auth-jwt-audience", "aud-a"]).await;
    let with = |iss: Option<&str>, aud: Option<&str>| {
        let mut claims = base_claims(&app);
        if let Some(iss) = iss {
            claims["iss"] = json!(iss);
        }
        if let Some(aud) = aud {
            claims["aud"] = json!(aud);
        }
        sign_json(&claims, Algorithm::HS256)
    };
    let cases = [
        ("wrong iss", with(Some("iss-b"), Some("aud-a"))),
        ("wrong aud", with(Some("iss-a"), Some("aud-b"))),
        ("missing iss", with(None, Some("aud-a"))),
        ("missing aud", with(Some("iss-a"), None)),
        ("neither iss nor aud", with(None, None)),
        ("iss and aud swapped", with(Some("aud-a"), Some("iss-a"))),
    ];
    for (case, token) in &cases {
        assert_unauthorized(&call_with_token(&app, token).await, case);
    }
    assert_eq!(app.count(None).await, 0);

    let response = call_with_token(&app, &with(Some("iss-a"), Some("aud-a"))).await;
    assert_created_in(&response, app.workspace, "right iss and aud");
    assert_eq!(app.count(None).await, 1);
}

#[tokio::test]
async fn issuer_and_audience_are_not_checked_when_not_configured() {
    let app = spawn_app().await;
    let mut claims = base_claims(&app);
    claims["iss"] = json!("some-issuer");
    let response = call_with_token(&app, &sign_json(&claims, Algorithm::HS256)).await;
    assert_created_in(&response, app.workspace, "a token carrying some iss");
    claims["aud"] = json!("some-audience");
    let response = call_with_token(&app, &sign_json(&claims, Algorithm::HS256)).await;
    assert_created_in(&response, app.workspace, "a token carrying some iss and aud");
    assert_eq!(app.count(None).await, 2);
}

/// `aud` may be an array of audiences (RFC 7519 §4.1.3). Unconfigured, it is not checked at all;
/// configured, a token whose audiences include the configured one is meant for this service.
#[tokio::test]
async fn an_audience_array_is_a_valid_aud() {
    let app = spawn_app().await;
    let mut claims = base_claims(&app);
    claims["aud"] = json!(["some-audience", "another-audience"]);
    let response = call_with_token(&app, &sign_json(&claims, Algorithm::HS256)).await;
    assert_created_in(&response, app.workspace, "aud array, audience not configured");

    let app = spawn_app_with(&["--auth-jwt-audience", "aud-a"]).await;
    let mut claims = base_claims(&app);
    claims["aud"] = json!(["aud-b", "aud-a"]);
    let response = call_with_token(&app, &sign_json(&claims, Algorithm::HS256)).await;
    assert_created_in(&response, app.workspace, "aud array holding the configured audience");
    claims["aud"] = json!(["aud-b", "aud-c"]);
    let response = call_with_token(&app, &sign_json(&claims, Algorithm::HS256)).await;
    assert_unauthorized(&response, "aud array without the configured audience");
    assert_eq!(app.count(None).await, 1);
}

// ---------------------------------------------------------------------------------------------
// Scopes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_without_the_write_scope_is_forbidden() {
    let app = spawn_app().await;
    for (case, scope) in [
        ("only opportunity:global", Some("opportunity:global")),
        ("empty scope", Some("")),
        ("no scope claim", None),
        ("a scope that only starts like write", Some("opportunity:writer opportunity:global")),
        ("another resource's write", Some("customer:write opportunity:read")),
        // Scopes are separated by spaces (RFC 6749 §3.3), not by any whitespace.
        ("a tab between scopes", Some("opportunity:read\topportunity:write")),
        ("a newline between scopes", Some("opportunity:read\nopportunity:write")),
        ("a no-break space between scopes", Some("opportunity:read\u{a0}opportunity:write")),
    ] {
        let mut claims = base_claims(&app);
        match scope {
            Some(scope) => claims["scope"] = json!(scope),
            None => {
                claims.as_object_mut().unwrap().remove("scope");
            }
        }
        let token = sign_json(&claims, Algorithm::HS256);
        assert_forbidden(&call_with_token(&app, &token).await, case);
    }
    assert_eq!(app.count(None).await, 0);
    // Repeated spaces are no scope of their own.
    let mut claims = base_claims(&app);
    claims["scope"] = json!("  opportunity:read   opportunity:write ");
    let response = call_with_token(&app, &sign_json(&claims, Algorithm::HS256)).await;
    assert!(response["result"]["id"].is_string(), "{response}");
}

#[tokio::test]
async fn global_visibility_needs_the_global_scope() {
    let app = spawn_app().await;
    let write_only = sign(&claims(app.user, &[app.workspace], "opportunity:write"));
    let both = sign(&claims(app.user, &[app.workspace], "opportunity:write opportunity:global"));
    let auth = |t: &str| format!("Bearer {t}");
    let mut global = valid_params();
    global["visibilityMode"] = json!("global");

    let response = call(&app, &[("authorization", &auth(&write_only))], global.clone()).await;
    assert_forbidden(&response, "global with only opportunity:write");
    assert_eq!(app.count(None).await, 0);

    let response = call(&app, &[("authorization", &auth(&both))], global).await;
    let result = assert_created_in(&response, app.workspace, "global with both scopes");
    assert_eq!(result["visibilityMode"], "global", "{response}");

    let mut local = valid_params();
    local["visibilityMode"] = json!("workspace_local");
    let response = call(&app, &[("authorization", &auth(&write_only))], local).await;
    let result = assert_created_in(&response, app.workspace, "workspace_local with only write");
    assert_eq!(result["visibilityMode"], "workspace_local", "{response}");

    let response = call(&app, &[("authorization", &auth(&write_only))], valid_params()).await;
    let result = assert_created_in(&response, app.workspace, "default visibility with only write");
    assert_eq!(result["visibilityMode"], "workspace_local", "{response}");
    assert_eq!(app.count(None).await, 3);
}

// ---------------------------------------------------------------------------------------------
// The workspace of a call
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_only_workspace_of_the_token_is_used_when_none_is_named() {
    let app = spawn_app().await;
    let response = call_with_token(&app, &app.token()).await;
    let result = assert_created_in(&response, app.workspace, "token's only workspace");
    assert_eq!(result["createdBy"], json!(app.user.to_string()), "{response}");
    assert_eq!(app.count(Some(app.workspace)).await, 1);
}

#[tokio::test]
async fn params_workspace_wins_over_the_header_and_the_token() {
    let app = spawn_app().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let token = format!("Bearer {}", sign(&claims(app.user, &[a, b], ALL_SCOPES)));
    let (sa, sb) = (a.to_string(), b.to_string());

    let mut params = valid_params();
    params["workspaceId"] = json!(sb);
    let response = call(&app, &[("authorization", &token)], params.clone()).await;
    assert_created_in(&response, b, "params only");

    let response = call(&app, &[("authorization", &token), ("x-workspace-id", &sa)], params).await;
    assert_created_in(&response, b, "params b, header a: params win");

    // Any case in params (§5), resolved to the granted workspace.
    let mut params = valid_params();
    params["workspaceId"] = json!(sa.to_uppercase());
    let response = call(&app, &[("authorization", &token), ("x-workspace-id", &sb)], params).await;
    assert_created_in(&response, a, "params A (upper case), header b");

    assert_eq!(app.count(Some(a)).await, 1);
    assert_eq!(app.count(Some(b)).await, 2);
}

#[tokio::test]
async fn header_workspace_is_used_when_params_name_none() {
    let app = spawn_app().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let token = format!("Bearer {}", sign(&claims(app.user, &[a, b], ALL_SCOPES)));
    for ws in [b, a] {
        let header = ws.to_string();
        let response = call(&app, &[("authorization", &token), ("x-workspace-id", &header)], valid_params()).await;
        assert_created_in(&response, ws, "header only, token with two workspaces");
    }
    // The header also wins over the token's only workspace.
    let single = format!("Bearer {}", sign(&claims(app.user, &[a], ALL_SCOPES)));
    let header = a.to_string();
    let response = call(&app, &[("authorization", &single), ("x-workspace-id", &header)], valid_params()).await;
    assert_created_in(&response, a, "header naming the only workspace");
    assert_eq!(app.count(Some(a)).await, 2);
    assert_eq!(app.count(Some(b)).await, 1);
}

#[tokio::test]
async fn a_workspace_outside_the_token_is_forbidden() {
    let app = spawn_app().await;
    let outside = Uuid::new_v4();
    let token = format!("Bearer {}", app.token());
    let inside = app.workspace.to_string();
    let outside_s = outside.to_string();

    let mut params = valid_params();
    params["workspaceId"] = json!(outside_s);
    let response = call(&app, &[("authorization", &token)], params.clone()).await;
    assert_forbidden(&response, "outside workspace in params");

    let response = call(&app, &[("authorization", &token), ("x-workspace-id", &inside)], params).await;
    assert_forbidden(&response, "outside workspace in params, granted one in the header");

    let response = call(&app, &[("authorization", &token), ("x-workspace-id", &outside_s)], valid_params()).await;
    assert_forbidden(&response, "outside workspace in the header");

    // Bad params are reported before the grant is checked (§4's order), wherever the workspace
    // is named.
    let mut bad = valid_params();
    bad["title"] = json!("");
    bad["probability"] = json!(101);
    let mut named = bad.clone();
    named["workspaceId"] = json!(outside_s);
    for (params, headers) in [
        (named, vec![("authorization", token.as_str())]),
        (bad, vec![("authorization", token.as_str()), ("x-workspace-id", outside_s.as_str())]),
    ] {
        let response = call(&app, &headers, params).await;
        field_errors(&response, &["title", "probability"]);
    }

    assert_eq!(app.count(None).await, 0);
}

#[tokio::test]
async fn several_workspaces_and_none_named_is_a_field_error() {
    let app = spawn_app().await;
    let token = format!("Bearer {}", sign(&claims(app.user, &[Uuid::new_v4(), Uuid::new_v4()], ALL_SCOPES)));
    let response = call(&app, &[("authorization", &token)], valid_params()).await;
    assert_workspace_field_error(&response, "two workspaces, none named");
    let mut params = valid_params();
    params["workspaceId"] = Value::Null;
    let response = call(&app, &[("authorization", &token)], params).await;
    assert_workspace_field_error(&response, "two workspaces, workspaceId null");
    assert_eq!(app.count(None).await, 0);
}

#[tokio::test]
async fn a_workspace_header_that_is_not_a_uuid_is_refused() {
    let app = spawn_app().await;
    let token = format!("Bearer {}", app.token());
    let braced = format!("{{{}}}", app.workspace);
    let compact = app.workspace.simple().to_string();
    let urn = app.workspace.urn().to_string();
    // Braced, compact and URN forms name the right workspace, but like params the header takes
    // the hyphenated form only.
    for header in ["marketing", "1234", &format!("{}0", app.workspace), &braced, &compact, &urn] {
        let response = call(&app, &[("authorization", &token), ("x-workspace-id", header)], valid_params()).await;
        let case = format!("X-Workspace-Id {header:?}");
        assert!(
            response.get("result").is_none(),
            "{case}: the token's only workspace must not stand in for a bad header: {response}"
        );
        // The contract does not say which refusal: a field error on workspaceId or FORBIDDEN.
        match response["error"]["code"].as_i64() {
            Some(-32602) => assert_workspace_field_error(&response, &case),
            Some(-32003) => assert_forbidden(&response, &case),
            _ => panic!("{case}: expected BAD_REQUEST or FORBIDDEN, got {response}"),
        }
    }
    assert_eq!(app.count(None).await, 0);
}

// ---------------------------------------------------------------------------------------------
// WebSocket: credentials in the handshake
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn websocket_handshake_credentials_and_workspace_header_are_used() {
    let app = spawn_app().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let auth = format!("Bearer {}", sign(&claims(app.user, &[a, b], ALL_SCOPES)));
    let header = b.to_string();
    let client = app.ws(&[("authorization", &auth), ("x-workspace-id", &header)]).await;
    let result =
        ws_create(&client, &valid_params()).await.unwrap_or_else(|e| panic!("create over WebSocket failed: {e:?}"));
    assert_eq!(result["workspaceId"], json!(b.to_string()), "{result}");
    assert_eq!(result["createdBy"], json!(app.user.to_string()), "{result}");

    // Params still win over the handshake's header.
    let mut params = valid_params();
    params["workspaceId"] = json!(a.to_string());
    let result =
        ws_create(&client, &params).await.unwrap_or_else(|e| panic!("second create over WebSocket failed: {e:?}"));
    assert_eq!(result["workspaceId"], json!(a.to_string()), "{result}");

    // And a workspace outside the token is FORBIDDEN on the socket too.
    params["workspaceId"] = json!(Uuid::new_v4().to_string());
    assert_ws_error(ws_create(&client, &params).await, -32003, "FORBIDDEN", "outside workspace over WebSocket");
    assert_eq!(app.count(Some(a)).await, 1);
    assert_eq!(app.count(Some(b)).await, 1);
    assert_eq!(app.count(None).await, 2);
}

/// On a WebSocket, a handshake that repeats `X-Workspace-Id` gets the same field error on every
/// create as HTTP does; a repeated `Idempotency-Key` there is ignored like a single one (keys go
/// in params on a WebSocket).
#[tokio::test]
async fn websocket_handshake_with_repeated_headers() {
    use jsonrpsee::ws_client::{HeaderMap, HeaderValue, WsClientBuilder};
    let app = spawn_app().await;
    let headers = |pairs: &[(&'static str, String)]| {
        let mut map = HeaderMap::new();
        map.insert("authorization", HeaderValue::from_str(&format!("Bearer {}", app.token())).unwrap());
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    };
    let ws = app.workspace.to_string();
    let repeated = headers(&[("x-workspace-id", ws.clone()), ("x-workspace-id", ws.clone())]);
    let client = WsClientBuilder::default().set_headers(repeated).build(app.ws_url()).await.expect("connects");
    let (code, data) = ws_error(ws_create(&client, &valid_params()).await);
    assert_eq!(code, -32602, "{data}");
    assert_eq!(
        data["fieldErrors"]["workspaceId"],
        json!(["the X-Workspace-Id header was sent more than once; send it once"]),
        "{data}"
    );
    let keys = headers(&[("idempotency-key", "a".into()), ("idempotency-key", "b".into())]);
    let client = WsClientBuilder::default().set_headers(keys).build(app.ws_url()).await.expect("connects");
    let result = ws_create(&client, &valid_params()).await.unwrap_or_else(|e| panic!("create: {e:?}"));
    assert_eq!(result["workspaceId"], json!(ws), "{result}");
    assert_eq!(app.count(None).await, 1);
}

#[tokio::test]
async fn websocket_with_a_workspace_header_outside_the_token_is_forbidden() {
    let app = spawn_app().await;
    let auth = format!("Bearer {}", app.token());
    let outside = Uuid::new_v4().to_string();
    let client = app.ws(&[("authorization", &auth), ("x-workspace-id", &outside)]).await;
    assert_ws_error(
        ws_create(&client, &valid_params()).await,
        -32003,
        "FORBIDDEN",
        "handshake header outside the token",
    );
    assert_eq!(app.count(None).await, 0);
}

#[tokio::test]
async fn websocket_without_a_token_is_refused_with_401() {
    let app = spawn_app().await;
    let (status, body, _) = ws_handshake(app.addr, "/", &[]).await;
    assert_eq!(status, 401, "CONTRACT §2: a handshake without a token is refused with 401");
    let body: Value = serde_json::from_slice(&body).expect("a JSON-RPC error body");
    assert_eq!(body["error"]["code"], -32001, "{body}");
    assert_eq!(body["error"]["data"]["code"], "UNAUTHORIZED", "{body}");
    // A client library sees the refusal as a failed connection.
    let refused = jsonrpsee::ws_client::WsClientBuilder::default().build(app.ws_url()).await;
    assert!(refused.is_err(), "the handshake is refused");
    assert_eq!(app.count(None).await, 0);
}

#[tokio::test]
async fn websocket_with_a_bad_token_is_refused_with_401() {
    let app = spawn_app().await;
    let other_key = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &base_claims(&app),
        &EncodingKey::from_secret(b"some-other-secret"),
    )
    .unwrap();
    let mut expired = base_claims(&app);
    expired["exp"] = json!(now() - 3600);
    let expired = sign_json(&expired, Algorithm::HS256);
    let unsigned = unsigned_token("none", &base_claims(&app));
    for (case, token) in [("another key", other_key), ("expired an hour ago", expired), ("alg none", unsigned)] {
        let header = format!("Authorization: Bearer {token}");
        let (status, body, _) = ws_handshake(app.addr, "/", &[&header]).await;
        assert_eq!(status, 401, "a token of {case} in the header");
        let body: Value = serde_json::from_slice(&body).expect("a JSON-RPC error body");
        assert_eq!(body["error"]["data"]["code"], "UNAUTHORIZED", "{case}: {body}");
        let (status, _, _) = ws_handshake(app.addr, &format!("/?access_token={token}"), &[]).await;
        assert_eq!(status, 401, "a token of {case} in access_token");
    }
    assert_eq!(app.count(None).await, 0);
}

/// CONTRACT §3: the token may travel as the `access_token` query parameter of the handshake;
/// the Authorization header wins when both are there.
#[tokio::test]
async fn websocket_token_in_the_access_token_query_parameter_is_accepted() {
    let app = spawn_app().await;
    let url = format!("ws://{}/?access_token={}", app.addr, app.token());
    let client = jsonrpsee::ws_client::WsClientBuilder::default().build(url).await.expect("handshake accepted");
    let created = ws_create(&client, &valid_params()).await.expect("create with the query token");
    assert_eq!(created["createdBy"], app.user.to_string(), "{created}");
    // A bad header is not rescued by a good query token.
    let (status, _, _) =
        ws_handshake(app.addr, &format!("/?access_token={}", app.token()), &["Authorization: Bearer x.y.z"]).await;
    assert_eq!(status, 401, "the Authorization header is read first");
    assert_eq!(app.count(None).await, 1);
}

#[tokio::test]
async fn websocket_token_that_expires_while_open_is_refused_on_the_next_call() {
    // The contract allows at most 60 s of leeway; the service documents its own.
    let leeway = i64::try_from(LEEWAY_SECONDS).unwrap();
    assert!(leeway <= 60, "leeway {leeway} s is over the contract's 60 s");
    let app = spawn_app().await;
    // Still valid (with the leeway) for 3 more seconds.
    let exp = now() - leeway + 3;
    let token = sign(&Claims { exp, ..claims(app.user, &[app.workspace], ALL_SCOPES) });
    let auth = format!("Bearer {token}");
    let client = app.ws(&[("authorization", &auth)]).await;
    let first = ws_create(&client, &valid_params()).await;
    assert!(first.is_ok(), "a token inside its leeway must be accepted: {first:?}");
    // Wait until the token is past exp + leeway, then one second more.
    while now() < exp + leeway + 1 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ws_error(
        ws_create(&client, &valid_params()).await,
        -32001,
        "UNAUTHORIZED",
        "a token that expired while the socket stayed open",
    );
    assert_eq!(app.count(None).await, 1);
}

// ---------------------------------------------------------------------------------------------
// The development secret and the `token` subcommand (process level)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn embedded_default_without_secret_runs_in_development_mode() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("x.db").display());
    let service = start_without_secret(&url);
    let log = service.log.lock().unwrap().clone();
    assert!(log.to_lowercase().contains("development mode"), "the log must say it runs in development mode:\n{log}");

    let secret_file = dir.path().join(opportunity_service::DEV_SECRET_FILE);
    assert_eq!(secret_file.file_name().unwrap(), "jwt-secret", "the development secret's file name");
    let meta =
        std::fs::metadata(&secret_file).unwrap_or_else(|e| panic!("{} was not created: {e}", secret_file.display()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "the development secret must be private");
    }
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    assert!(secret.trim().len() >= 32, "HS256 needs 32 bytes of secret at least");
    assert!(!log.contains(secret.trim()), "the secret must not appear in the log");

    // A token printed by `token` (same DATABASE_URL, no secret) is accepted by the service.
    let workspace = Uuid::new_v4();
    let token = mint_with_cli(&url, &["--workspace", &workspace.to_string()]);
    let response = post_to(service.addr, &token, valid_params()).await;
    assert_created_in(&response, workspace, "token from `token` in development mode");
    // By default it grants every scope.
    let mut global = valid_params();
    global["visibilityMode"] = json!("global");
    let response = post_to(service.addr, &token, global).await;
    assert_created_in(&response, workspace, "default scopes include opportunity:global");

    // A token signed with some other secret is still refused.
    let foreign = sign(&claims(Uuid::new_v4(), &[workspace], ALL_SCOPES));
    let response = post_to(service.addr, &foreign, valid_params()).await;
    assert_unauthorized(&response, "the test secret is not the development secret");
    assert!(!log.contains("other users"), "a private secret gets no warning:\n{log}");
    drop(service);

    // A secret others may read is used, with a warning that says how to mend it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let service = start_without_secret(&url);
        let log = service.log.lock().unwrap().clone();
        assert!(log.contains("can be read by other users") && log.contains("chmod 600"), "{log}");
        let response = post_to(service.addr, &token, valid_params()).await;
        assert_created_in(&response, workspace, "the same secret, still used");
    }
}

#[test]
fn token_subcommand_puts_the_claims_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("x.db").display());
    let user = Uuid::new_v4();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let before = now();
    let token = mint_with_cli(
        &url,
        &[
            "--workspace",
            &a.to_string(),
            "--workspace",
            &b.to_string(),
            "--user",
            &user.to_string(),
            "--scope",
            "opportunity:write",
        ],
    );
    let after = now();
    let secret_file = dir.path().join(opportunity_service::DEV_SECRET_FILE);
    let secret =
        std::fs::read_to_string(&secret_file).unwrap_or_else(|e| panic!("{} is not there: {e}", secret_file.display()));
    let claims = decode(&token, secret.trim());

    assert_eq!(claims["sub"], json!(user.to_string()), "{claims}");
    let mut workspaces: Vec<Uuid> = claims["workspaces"]
        .as_array()
        .unwrap_or_else(|| panic!("no workspaces array: {claims}"))
        .iter()
        .map(|w| Uuid::try_parse(w.as_str().unwrap()).unwrap())
        .collect();
    workspaces.sort();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(workspaces, expected, "{claims}");
    let scopes: Vec<&str> = claims["scope"].as_str().unwrap().split_whitespace().collect();
    assert_eq!(scopes, ["opportunity:write"], "{claims}");
    // --ttl defaults to 1h.
    let exp = claims["exp"].as_i64().unwrap();
    assert!((before + 3600..=after + 3600).contains(&exp), "exp {exp} is not an hour from now: {claims}");

    // --ttl is honoured; without --scope every scope is granted; without --user some UUID.
    let token = mint_with_cli(&url, &["--workspace", &a.to_string(), "--ttl", "30m"]);
    let after = now();
    let claims = decode(&token, secret.trim());
    let exp = claims["exp"].as_i64().unwrap();
    assert!((before + 1800..=after + 1800).contains(&exp), "exp {exp} is not 30 minutes from now: {claims}");
    let mut scopes: Vec<&str> = claims["scope"].as_str().unwrap().split_whitespace().collect();
    scopes.sort_unstable();
    assert_eq!(scopes, ["opportunity:global", "opportunity:read", "opportunity:write"], "{claims}");
    assert!(Uuid::try_parse(claims["sub"].as_str().unwrap_or("")).is_ok(), "{claims}");
    assert_eq!(claims["workspaces"], json!([a.to_string()]), "{claims}");
}

/// `token --ttl` must be positive: a token of no lifetime would be expired when printed.
#[test]
fn token_subcommand_refuses_a_ttl_of_zero() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("x.db").display());
    for ttl in ["0s", "0", "0m"] {
        let output = bin(&url)
            .env("AUTH_JWT_SECRET", SECRET)
            .args(["token", "--workspace", "11111111-1111-4111-8111-111111111111", "--ttl", ttl])
            .output()
            .expect("token subcommand runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "--ttl {ttl} must be refused; stdout: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        assert!(output.stdout.is_empty(), "--ttl {ttl}: no token printed");
        assert!(stderr.contains("--ttl") && stderr.contains("must be positive"), "--ttl {ttl}: {stderr}");
    }
    let token = mint_with_cli(&url, &["--workspace", "11111111-1111-4111-8111-111111111111", "--ttl", "1s"]);
    assert!(decode(&token, secret_of(&url).as_str())["exp"].is_i64());
}

/// `token` never makes a secret of its own: without one it fails, naming the file it looked
/// for, and creates nothing (a new secret would sign tokens the running service refuses).
#[test]
fn token_subcommand_without_a_development_secret_fails_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("x.db").display());
    let output = bin(&url)
        .args(["token", "--workspace", "11111111-1111-4111-8111-111111111111"])
        .output()
        .expect("token subcommand runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "no secret: refused");
    assert!(output.stdout.is_empty(), "no token printed");
    let file = dir.path().join(opportunity_service::DEV_SECRET_FILE);
    assert!(stderr.contains(&file.display().to_string()), "names {}: {stderr}", file.display());
    assert!(!file.exists(), "creates no secret");
    // With the secret `serve` made, it says which file it signed with.
    let token = mint_with_cli(&url, &["--workspace", "11111111-1111-4111-8111-111111111111"]);
    assert!(!token.is_empty());
    let output = bin(&url).args(["token", "--workspace", "11111111-1111-4111-8111-111111111111"]).output().unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("signed with the development secret"));
}

/// The development secret `token` signs with on `database_url`.
fn secret_of(database_url: &str) -> String {
    let path = std::path::Path::new(database_url.trim_start_matches("sqlite://"));
    std::fs::read_to_string(path.parent().unwrap().join(opportunity_service::DEV_SECRET_FILE))
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test]
async fn token_subcommand_signs_with_the_configured_secret() {
    let app = spawn_app().await;
    let output = bin(&app.db.url)
        .env("AUTH_JWT_SECRET", SECRET)
        .args(["token", "--workspace", &app.workspace.to_string()])
        .args(["--user", &app.user.to_string()])
        .output()
        .expect("token subcommand runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap().trim().to_string();
    let response = call_with_token(&app, &token).await;
    let result = assert_created_in(&response, app.workspace, "token minted with AUTH_JWT_SECRET");
    assert_eq!(result["createdBy"], json!(app.user.to_string()), "{response}");
}

/// The configuration `token` reads includes the issuer and audience the service checks: its
/// tokens are accepted by a service so configured.
#[tokio::test]
async fn token_subcommand_follows_the_configured_issuer_and_audience() {
    let app = spawn_app_with(&["--auth-jwt-issuer", "iss-a", "--auth-jwt-audience", "aud-a"]).await;
    let output = bin(&app.db.url)
        .env("AUTH_JWT_SECRET", SECRET)
        .env("AUTH_JWT_ISSUER", "iss-a")
        .env("AUTH_JWT_AUDIENCE", "aud-a")
        .args(["token", "--workspace", &app.workspace.to_string()])
        .output()
        .expect("token subcommand runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap().trim().to_string();
    let claims = decode(&token, SECRET);
    assert_eq!(claims["iss"], json!("iss-a"), "{claims}");
    assert_eq!(claims["aud"], json!("aud-a"), "{claims}");
    let response = call_with_token(&app, &token).await;
    assert_created_in(&response, app.workspace, "token minted with iss and aud configured");
}

#[test]
fn postgres_without_a_secret_refuses_to_start() {
    let started = Instant::now();
    let mut child = bin("postgres://postgres@127.0.0.1:5432/test")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the service on PostgreSQL without AUTH_JWT_SECRET is still running after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    assert!(!status.success(), "exit status {status}; stderr:\n{stderr}");
    assert!(
        format!("{stderr}{stdout}").contains("AUTH_JWT_SECRET"),
        "the message must name AUTH_JWT_SECRET; stderr:\n{stderr}\nstdout:\n{stdout}"
    );
    assert!(!stderr.contains("listening on"), "it must not listen: {stderr}");
}

//! `rpc.discover`: answered without a token, lists exactly the registered methods, and is a
//! valid OpenRPC document (checked against the OpenRPC meta-schema, vendored in
//! tests/fixtures/openrpc/).

use std::collections::BTreeSet;

use jsonschema::{Retrieve, Uri};
use serde_json::{Value, json};

use crate::helpers::*;

const OPENRPC_META: &str = include_str!("../fixtures/openrpc/open-rpc-meta-schema-1.14.9.json");
const JSON_SCHEMA_META: &str = include_str!("../fixtures/openrpc/json-schema-tools-meta-schema-1.8.0.json");

/// Serves the meta-schema that the OpenRPC one refers to; nothing is fetched from the network.
struct Vendored;

impl Retrieve for Vendored {
    fn retrieve(&self, uri: &Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        if uri.as_str().starts_with("https://meta.json-schema.tools") {
            Ok(serde_json::from_str(JSON_SCHEMA_META)?)
        } else {
            Err(format!("not vendored: {uri}").into())
        }
    }
}

async fn discover(app: &TestApp) -> Value {
    let (status, response) = app.post_raw(request(json!(1), "rpc.discover", json!([])).to_string(), &[]).await;
    assert_eq!(status, 200);
    response["result"].clone()
}

#[tokio::test]
async fn discover_answers_without_a_token_and_lists_the_registered_methods() {
    let app = spawn_app().await;
    let document = discover(&app).await;
    let listed: BTreeSet<&str> =
        document["methods"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    let state = opportunity_service::rpc::AppState {
        db: app.db.open(),
        metrics: std::sync::Arc::new(opportunity_service::metrics::Metrics::new()),
        cursor_key: opportunity_service::rpc::list::CursorKey::derive(SECRET.as_bytes()),
        feed: opportunity_service::feed::Feed::start(app.db.open()),
    };
    let module = opportunity_service::rpc::methods(state, app.addr).unwrap();
    let registered: BTreeSet<&str> = module.method_names().filter(|m| *m != "rpc.discover").collect();
    assert_eq!(listed, registered);

    let create = document["methods"].as_array().unwrap().iter().find(|m| m["name"] == "opportunity.create").unwrap();
    assert_eq!(create["paramStructure"], "by-name");
    let params: BTreeSet<&str> =
        create["params"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    let fields: BTreeSet<&str> =
        opportunity_service::rpc::opportunity::CREATE_FIELDS.iter().map(String::as_str).collect();
    assert_eq!(params, fields);
    let required: BTreeSet<&str> = create["params"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["required"] == true)
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(required, BTreeSet::from(["customerId", "title", "pipelineType"]));

    // Generators make a function of each method with the params in the listed order: the
    // required ones come first, in every method.
    for method in document["methods"].as_array().unwrap() {
        let flags: Vec<bool> =
            method["params"].as_array().unwrap().iter().map(|p| p["required"].as_bool().unwrap()).collect();
        assert!(flags.windows(2).all(|w| w[0] || !w[1]), "{}: a required param after an optional one", method["name"]);
    }
    let names: Vec<&str> = create["params"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names[..3], ["customerId", "title", "pipelineType"]);
}

/// `servers` names the address the service really listens on (here a port picked by the system),
/// for HTTP and for WebSocket.
#[tokio::test]
async fn discover_names_the_listening_address() {
    let app = spawn_app().await;
    let document = discover(&app).await;
    assert_eq!(document["servers"][0]["url"], format!("http://{}/", app.addr), "{}", document["servers"]);
    assert_eq!(document["servers"][1]["url"], format!("ws://{}/", app.addr), "{}", document["servers"]);
    assert_ne!(app.addr.port(), 8080, "the test listens on a port of its own");
}

#[tokio::test]
async fn discover_is_a_valid_openrpc_document() {
    let app = spawn_app().await;
    let document = discover(&app).await;
    let meta: Value = serde_json::from_str(OPENRPC_META).unwrap();
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .with_retriever(Vendored)
        .build(&meta)
        .expect("the meta-schema compiles");
    let errors: Vec<String> =
        validator.iter_errors(&document).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // The check can fail: a document without methods is refused.
    assert!(!validator.is_valid(&json!({"openrpc": "1.3.2", "info": {"title": "x", "version": "1"}})));
}

//! `rpc.discover`: an OpenRPC 1.3 document of every registered method, built at start-up from
//! the schemas of `openapi/openapi.yaml` (compiled in), so that both documents say the same.

use jsonrpsee::RpcModule;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

/// The name of the discovery method (answered without a token, CONTRACT.md §3).
pub const DISCOVER: &str = "rpc.discover";

const OPENAPI: &str = include_str!("../../openapi/openapi.yaml");

/// What OpenRPC says of each method: its params and result schemas (names under
/// `components.schemas` of the OpenAPI document) and a summary.
const METHODS: &[(&str, &str, &str, &str)] = &[
    (
        super::opportunity::CREATE,
        "CreateOpportunityParams",
        "Opportunity",
        "Create an opportunity in the caller's workspace; answered once it is durably stored.",
    ),
    (super::lifecycle::GET, "OpportunityRef", "Opportunity", "Read one opportunity, archived or not."),
    (
        super::list::LIST,
        "ListOpportunitiesParams",
        "OpportunityPage",
        "List opportunities of a workspace (or every one readable there), filtered, ordered, in keyset pages.",
    ),
    (
        super::lifecycle::UPDATE,
        "UpdateOpportunityParams",
        "Opportunity",
        "Change some fields of an opportunity at the expected version.",
    ),
    (super::lifecycle::ARCHIVE, "ChangeStateParams", "Opportunity", "Archive an opportunity (nothing is deleted)."),
    (super::lifecycle::RESTORE, "ChangeStateParams", "Opportunity", "Restore an archived opportunity."),
    (
        super::changes::CHANGES,
        "ChangesParams",
        "ChangesPage",
        "Page through the change events after `since`, in commit order (HTTP or WebSocket).",
    ),
    (
        super::changes::SUBSCRIBE,
        "SubscribeParams",
        "SubscriptionId",
        "WebSocket only: stored events after `since`, then live ones, as opportunity.changed notifications.",
    ),
    (super::changes::UNSUBSCRIBE, "UnsubscribeParams", "Unsubscribed", "End a subscription of this connection."),
];

/// Builds the document for the given method names; a method without an entry in [`METHODS`], or
/// an entry without its schemas, is an error, so the document cannot fall behind the code.
pub fn document<'a>(method_names: impl IntoIterator<Item = &'a str>) -> anyhow::Result<Value> {
    let openapi: Value = serde_norway::from_str(OPENAPI)?;
    let schemas = openapi
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .ok_or_else(|| anyhow::anyhow!("openapi.yaml has no components.schemas"))?;
    let mut methods = Vec::new();
    for name in method_names {
        let Some(&(_, params, result, summary)) = METHODS.iter().find(|m| m.0 == name) else {
            anyhow::bail!("method {name} has no OpenRPC description in src/rpc/discover.rs");
        };
        let params_schema = schemas.get(params).ok_or_else(|| anyhow::anyhow!("openapi.yaml lacks schema {params}"))?;
        let required: Vec<&str> = params_schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let properties = params_schema["properties"]
            .as_object()
            .ok_or_else(|| anyhow::anyhow!("schema {params} has no properties"))?;
        let params: Vec<Value> = properties
            .iter()
            .map(|(field, schema)| {
                let mut descriptor = Map::new();
                descriptor.insert("name".into(), field.clone().into());
                descriptor.insert("required".into(), required.contains(&field.as_str()).into());
                if let Some(description) = schema.get("description") {
                    descriptor.insert("description".into(), description.clone());
                }
                descriptor.insert("schema".into(), schema.clone());
                Value::Object(descriptor)
            })
            .collect();
        if !schemas.contains_key(result) {
            anyhow::bail!("openapi.yaml lacks schema {result}");
        }
        methods.push(json!({
            "name": name,
            "summary": summary,
            "paramStructure": "by-name",
            "params": params,
            "result": {"name": "result", "schema": {"$ref": format!("#/components/schemas/{result}")}},
        }));
    }
    Ok(json!({
        "openrpc": "1.3.2",
        "info": {
            "title": "opportunity-service",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "JSON-RPC 2.0 over HTTP (POST /) and WebSocket. Every method but rpc.* needs Authorization: Bearer <JWT>.",
        },
        "servers": [{"name": "default", "url": "http://127.0.0.1:8080/"}],
        "methods": methods,
        "components": {"schemas": rewrite_refs(Value::Object(schemas.clone()))},
    }))
}

/// OpenAPI's `#/components/schemas/X` is also the path in an OpenRPC document; other refs
/// (parameters, responses) have no place there and are dropped to an open schema.
fn rewrite_refs(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref")
                && !r.starts_with("#/components/schemas/")
            {
                return json!({});
            }
            Value::Object(map.into_iter().map(|(k, v)| (k, rewrite_refs(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(rewrite_refs).collect()),
        other => other,
    }
}

/// Registers `rpc.discover` answering with the document of `methods` (plus nothing else).
pub fn register(module: &mut RpcModule<()>) -> anyhow::Result<()> {
    let names: Vec<&str> = module.method_names().collect();
    let document = RawValue::from_string(document(names)?.to_string())?;
    module.register_method(DISCOVER, move |_, _, _| Ok::<_, jsonrpsee::types::ErrorObjectOwned>(document.clone()))?;
    Ok(())
}

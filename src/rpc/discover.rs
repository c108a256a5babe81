//! `rpc.discover`: an OpenRPC 1.3 document of every registered method, built at start-up from
//! the OpenAPI document the code generates ([`super::openapi::document`], the same as
//! `openapi/openapi.yaml`), so that both documents say the same.
//!
//! The OpenAPI schemas are JSON Schema 2020-12; an OpenRPC document holds draft-07 ones, read by
//! generators such as `@open-rpc/generator`. So the document made here differs from them in form
//! only: a `$ref` never has siblings (they go beside it, around an `allOf` of the `$ref`), every
//! schema has a `title` (generators name their types after it, and after a hash without one),
//! params are listed with the required ones first, and only the schemas that the methods use are
//! there.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use jsonrpsee::RpcModule;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

/// The name of the discovery method (answered without a token, CONTRACT.md §3).
pub const DISCOVER: &str = "rpc.discover";

use super::openapi::{METHODS, SCHEMAS};

/// Keywords of OpenAPI's schema object that are not JSON Schema (draft-07) and mean nothing in
/// an OpenRPC document.
const OPENAPI_ONLY: &[&str] = &["discriminator", "xml", "externalDocs", "example"];

/// The servers of the document: the address the service listens on, over HTTP and WebSocket.
/// An unspecified address (`0.0.0.0`, `::`) is every address of the host: the URL then has a
/// `host` variable whose default is the loopback address.
fn servers(addr: SocketAddr) -> Value {
    let port = addr.port();
    let (host, variables) = if addr.ip().is_unspecified() {
        let loopback = if addr.is_ipv4() { "127.0.0.1" } else { "[::1]" };
        let description = format!(
            "The service listens on every address of its host ({addr}); any of them reaches it. The default is this host's loopback address."
        );
        ("{host}".to_string(), Some(json!({"host": {"default": loopback, "description": description}})))
    } else {
        let host = match addr.ip() {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        };
        (host, None)
    };
    let server = |name: &str, scheme: &str, summary: &str| {
        let mut server = json!({"name": name, "url": format!("{scheme}://{host}:{port}/"), "summary": summary});
        if let Some(variables) = &variables {
            server["variables"] = variables.clone();
        }
        server
    };
    json!([
        server("http", "http", "JSON-RPC 2.0 over HTTP: POST / with Content-Type: application/json."),
        server(
            "websocket",
            "ws",
            "JSON-RPC 2.0 over WebSocket, on the same port and path; needed for opportunity.subscribe."
        ),
    ])
}

/// Builds the document for the given method names, served at `addr`; a method without an entry
/// in [`METHODS`], or an entry without its schemas, is an error, so the document cannot fall
/// behind the code.
pub fn document<'a>(method_names: impl IntoIterator<Item = &'a str>, addr: SocketAddr) -> anyhow::Result<Value> {
    // As YAML values, whose mappings keep the order of the document (the order the params are
    // listed in), and as JSON ones.
    let ordered = super::openapi::document();
    let openapi: Value = serde_json::to_value(&ordered)?;
    let openapi_schemas = openapi
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .ok_or_else(|| anyhow::anyhow!("openapi.yaml has no components.schemas"))?;
    let mut schemas: BTreeMap<String, Value> = BTreeMap::new();
    for (name, schema) in openapi_schemas {
        let mut schema = normalize(schema.clone());
        give_titles(&mut schema, name);
        schemas.insert(name.clone(), schema);
    }

    let mut methods = Vec::new();
    let mut used = BTreeSet::new();
    for name in method_names {
        let Some(method) = METHODS.iter().find(|m| m.name == name) else {
            anyhow::bail!("method {name} has no description in src/rpc/openapi.rs");
        };
        let summary = method.summary;
        let params = super::openapi::referred(&(method.params)(&mut super::openapi::generator(false))).to_string();
        let result = super::openapi::referred(&(method.result)(&mut super::openapi::generator(true))).to_string();
        let (params, result) = (params.as_str(), result.as_str());
        let params_schema = schemas.get(params).ok_or_else(|| anyhow::anyhow!("openapi.yaml lacks schema {params}"))?;
        let required: Vec<&str> = params_schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let properties = params_schema["properties"]
            .as_object()
            .ok_or_else(|| anyhow::anyhow!("schema {params} has no properties"))?;
        let in_order: Vec<&str> = ordered
            .get("components")
            .and_then(|c| c.get("schemas"))
            .and_then(|s| s.get(params))
            .and_then(|p| p.get("properties"))
            .and_then(serde_norway::Value::as_mapping)
            .map(|m| m.keys().filter_map(serde_norway::Value::as_str).collect())
            .unwrap_or_default();
        // The required params first, in the order of `required`; then the others, in the order of
        // the document.
        let mut names: Vec<&str> = required.iter().copied().filter(|n| properties.contains_key(*n)).collect();
        names.extend(in_order.iter().copied().filter(|n| !required.contains(n)));
        let rest: Vec<&str> = properties.keys().map(String::as_str).filter(|n| !names.contains(n)).collect();
        names.extend(rest);
        let params: Vec<Value> = names
            .iter()
            .map(|field| {
                let schema = &properties[*field];
                collect_refs(schema, &mut used);
                let mut descriptor = Map::new();
                descriptor.insert("name".into(), (*field).into());
                descriptor.insert("required".into(), required.contains(field).into());
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
        used.insert(result.to_string());
        methods.push(json!({
            "name": name,
            "summary": summary,
            "paramStructure": "by-name",
            "params": params,
            "result": {"name": "result", "schema": {"$ref": format!("{SCHEMAS}{result}")}},
        }));
    }

    // Only the schemas the methods use, and those they use in turn.
    let mut components = Map::new();
    let mut pending: Vec<String> = used.iter().cloned().collect();
    while let Some(name) = pending.pop() {
        if components.contains_key(&name) {
            continue;
        }
        let schema = schemas.get(&name).ok_or_else(|| anyhow::anyhow!("openapi.yaml lacks schema {name}"))?;
        let mut refs = BTreeSet::new();
        collect_refs(schema, &mut refs);
        pending.extend(refs.into_iter().filter(|r| !components.contains_key(r)));
        components.insert(name, schema.clone());
    }

    Ok(json!({
        "openrpc": "1.3.2",
        "info": {
            "title": "opportunity-service",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "JSON-RPC 2.0 over HTTP (POST /) and WebSocket. Every method but rpc.* needs Authorization: Bearer <JWT>.",
            "license": {"name": env!("CARGO_PKG_LICENSE")},
        },
        "servers": servers(addr),
        "methods": methods,
        "components": {"schemas": components},
    }))
}

/// The names of the component schemas a schema refers to.
fn collect_refs(value: &Value, into: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(name) = map.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix(SCHEMAS)) {
                into.insert(name.to_string());
            }
            map.values().for_each(|v| collect_refs(v, into));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, into)),
        _ => {}
    }
}

/// The keywords whose value is one schema, a list of schemas, or a map of names to schemas.
const ONE_SCHEMA: &[&str] =
    &["items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames"];
const SCHEMA_LISTS: &[&str] = &["allOf", "anyOf", "oneOf"];
const SCHEMA_MAPS: &[&str] = &["properties", "patternProperties", "definitions"];

/// Applies `f` to every subschema of `schema` (not to `schema` itself), with a name for where it
/// is, e.g. `Title` for `properties.title`, `Item` for `items`.
fn for_each_subschema(schema: &mut Map<String, Value>, mut f: impl FnMut(&mut Value, String)) {
    for (keyword, value) in schema.iter_mut() {
        if ONE_SCHEMA.contains(&keyword.as_str()) && value.is_object() {
            let name = match keyword.as_str() {
                "items" => "Item".to_string(),
                "additionalProperties" => "Value".to_string(),
                other => pascal(other),
            };
            f(value, name);
        } else if SCHEMA_LISTS.contains(&keyword.as_str())
            && let Value::Array(members) = value
        {
            // A member is named after its type where that tells it apart, else by its place.
            let kinds: Vec<Option<String>> =
                members.iter().map(|m| m.get("type").and_then(Value::as_str).map(pascal)).collect();
            for (i, member) in members.iter_mut().enumerate() {
                let name = match &kinds[i] {
                    Some(kind) if kinds.iter().filter(|k| k.as_ref() == Some(kind)).count() == 1 => kind.clone(),
                    _ => format!("{}{}", pascal(keyword), i + 1),
                };
                f(member, name);
            }
        } else if SCHEMA_MAPS.contains(&keyword.as_str())
            && let Value::Object(members) = value
        {
            for (name, member) in members.iter_mut() {
                f(member, pascal(name));
            }
        }
    }
}

/// `solutionFamilies` → `SolutionFamilies`; characters that cannot be in a type name are left out.
fn pascal(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            if upper {
                out.extend(c.to_uppercase());
            } else {
                out.push(c);
            }
            upper = false;
        } else {
            upper = true;
        }
    }
    out
}

/// What a one-schema `allOf` around a `$ref` may hold besides it, to be merged into the schema
/// that holds it: annotations, which mean the same there.
const MERGEABLE: &[&str] =
    &["$ref", "default", "description", "title", "examples", "deprecated", "readOnly", "writeOnly"];

/// OpenAPI's form of a schema, made draft-07's: a one-schema `allOf` is merged into the schema
/// that holds it when their keywords do not overlap, a `$ref` with siblings goes into an `allOf`
/// beside them, refs to anything but `#/components/schemas/X` (the same path in an OpenRPC
/// document) are dropped to an open schema, and OpenAPI's own keywords are left out.
fn normalize(value: Value) -> Value {
    let mut map = match value {
        Value::Object(map) => map,
        Value::Array(items) => return Value::Array(items.into_iter().map(normalize).collect()),
        other => return other,
    };
    if let Some(Value::String(r)) = map.get("$ref")
        && !r.starts_with(SCHEMAS)
    {
        return json!({});
    }
    for keyword in OPENAPI_ONLY {
        map.remove(*keyword);
    }
    // `{"description": …, "allOf": [{"$ref": …, "default": …}]}`, OpenAPI's way to give a
    // referred schema a default, is one schema: `{"description": …, "default": …, "$ref": …}`.
    if let Some(Value::Array(members)) = map.get("allOf")
        && let [Value::Object(only)] = members.as_slice()
        && only.contains_key("$ref")
        && only.keys().all(|k| MERGEABLE.contains(&k.as_str()) && !map.contains_key(k))
    {
        let only = only.clone();
        map.remove("allOf");
        map.extend(only);
    }
    let mut schema: Map<String, Value> = Map::new();
    for (keyword, value) in map {
        let value = if ONE_SCHEMA.contains(&keyword.as_str()) || SCHEMA_LISTS.contains(&keyword.as_str()) {
            normalize(value)
        } else if SCHEMA_MAPS.contains(&keyword.as_str())
            && let Value::Object(members) = value
        {
            Value::Object(members.into_iter().map(|(k, v)| (k, normalize(v))).collect())
        } else {
            value
        };
        schema.insert(keyword, value);
    }
    if schema.contains_key("$ref") && schema.len() > 1 {
        let reference = schema.remove("$ref").expect("checked");
        let mut members = match schema.remove("allOf") {
            Some(Value::Array(members)) => members,
            _ => Vec::new(),
        };
        members.insert(0, json!({ "$ref": reference }));
        schema.insert("allOf".into(), Value::Array(members));
    }
    Value::Object(schema)
}

/// Gives every schema without a `title` one made from where it is (`CreateOpportunityParams`,
/// `CreateOpportunityParamsTitle`, `OpportunityPageItemsItem`, …). A bare `$ref` needs none: it
/// is the schema it names.
fn give_titles(schema: &mut Value, title: &str) {
    let Value::Object(map) = schema else { return };
    let bare_ref = map.len() == 1 && map.contains_key("$ref");
    if !bare_ref && !map.contains_key("title") {
        map.insert("title".into(), title.into());
    }
    let title = map.get("title").and_then(Value::as_str).unwrap_or(title).to_string();
    for_each_subschema(map, |sub, name| give_titles(sub, &format!("{title}{name}")));
}

/// Registers `rpc.discover` answering with the document of `module`'s methods (plus nothing
/// else), served at `addr`: the address the service listens on.
pub fn register(module: &mut RpcModule<()>, addr: SocketAddr) -> anyhow::Result<()> {
    let names: Vec<&str> = module.method_names().collect();
    let document = RawValue::from_string(document(names, addr)?.to_string())?;
    module.register_method(DISCOVER, move |_, _, _| Ok::<_, jsonrpsee::types::ErrorObjectOwned>(document.clone()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_methods() -> Vec<&'static str> {
        METHODS.iter().map(|m| m.name).collect()
    }

    fn local() -> SocketAddr {
        "127.0.0.1:8080".parse().unwrap()
    }

    fn method<'a>(document: &'a Value, name: &str) -> &'a Value {
        document["methods"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap()
    }

    /// Every value in the document with this key, wherever it is.
    fn find_all<'a>(value: &'a Value, key: &str, into: &mut Vec<&'a Value>) {
        match value {
            Value::Object(map) => {
                if let Some(found) = map.get(key) {
                    into.push(found);
                }
                map.values().for_each(|v| find_all(v, key, into));
            }
            Value::Array(items) => items.iter().for_each(|v| find_all(v, key, into)),
            _ => {}
        }
    }

    #[test]
    fn a_method_without_a_description_is_an_error() {
        assert!(document(["opportunity.nope"], local()).is_err());
    }

    #[test]
    fn params_list_the_required_ones_first() {
        let document = document(all_methods(), local()).unwrap();
        for name in all_methods() {
            let params = method(&document, name)["params"].as_array().unwrap();
            let first_optional = params.iter().position(|p| p["required"] == false).unwrap_or(params.len());
            assert!(params[first_optional..].iter().all(|p| p["required"] == false), "{name}: {params:#?}");
        }
        let create: Vec<&str> = method(&document, "opportunity.create")["params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        // `required` order (the wire type's), then the document's (by name): not the alphabet's
        // for the required ones.
        assert_eq!(create[..5], ["customerId", "title", "pipelineType", "bidDueDate", "budgetConfirmed"]);
        let update: Vec<&str> = method(&document, "opportunity.update")["params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(update[..2], ["id", "expectedVersion"]);
    }

    #[test]
    fn every_schema_has_a_title_and_no_ref_has_siblings() {
        let document = document(all_methods(), local()).unwrap();
        fn no_ref_siblings(value: &Value, path: &str) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(_)) = map.get("$ref") {
                        assert_eq!(map.len(), 1, "a $ref with siblings at {path}: {value}");
                    }
                    map.iter().for_each(|(k, v)| no_ref_siblings(v, &format!("{path}/{k}")));
                }
                Value::Array(items) => {
                    items.iter().enumerate().for_each(|(i, v)| no_ref_siblings(v, &format!("{path}/{i}")))
                }
                _ => {}
            }
        }
        no_ref_siblings(&document, "");
        // Schemas: the components, their subschemas, the params' schemas.
        fn check(schema: &Value, path: &str, titles: &mut BTreeMap<String, Value>) {
            let Value::Object(map) = schema else { return };
            if map.len() == 1 && map.contains_key("$ref") {
                return;
            }
            let title =
                map.get("title").and_then(Value::as_str).unwrap_or_else(|| panic!("no title at {path}: {schema}"));
            assert!(title.chars().all(|c| c.is_ascii_alphanumeric()), "title {title:?} at {path}");
            // One title, one schema: a generator makes one type of each.
            if let Some(other) = titles.insert(title.to_string(), schema.clone()) {
                assert_eq!(&other, schema, "two schemas titled {title}");
            }
            let mut map = map.clone();
            for_each_subschema(&mut map, |sub, name| check(sub, &format!("{path}/{name}"), titles));
        }
        let mut titles = BTreeMap::new();
        for (name, schema) in document["components"]["schemas"].as_object().unwrap() {
            assert_eq!(schema["title"], json!(name));
            check(schema, name, &mut titles);
        }
        for m in document["methods"].as_array().unwrap() {
            for p in m["params"].as_array().unwrap() {
                check(&p["schema"], &format!("{}/{}", m["name"], p["name"]), &mut titles);
            }
        }
        assert!(titles.contains_key("CreateOpportunityParamsTitle"), "{:?}", titles.keys());
    }

    #[test]
    fn components_are_those_the_methods_use() {
        let document = document(all_methods(), local()).unwrap();
        let components: BTreeSet<String> =
            document["components"]["schemas"].as_object().unwrap().keys().cloned().collect();
        let mut refs = Vec::new();
        find_all(&document, "$ref", &mut refs);
        let used: BTreeSet<String> =
            refs.iter().map(|r| r.as_str().unwrap().strip_prefix(SCHEMAS).expect("a schema ref").to_string()).collect();
        assert_eq!(components, used);
        for envelope in ["JsonRpcRequest", "JsonRpcResponseBody", "CreateOpportunityRequest"] {
            assert!(!components.contains(envelope), "{envelope} is OpenAPI's, not a method's");
        }
        for keyword in OPENAPI_ONLY {
            let mut found = Vec::new();
            find_all(&document, keyword, &mut found);
            assert!(found.is_empty(), "{keyword}: {found:?}");
        }
    }

    #[test]
    fn defaults_survive_the_change_of_form() {
        let document = document(all_methods(), local()).unwrap();
        let stage = method(&document, "opportunity.create")["params"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "stage")
            .unwrap();
        assert_eq!(stage["required"], false);
        assert_eq!(stage["schema"]["default"], "lead", "{stage}");
        assert_eq!(stage["schema"]["allOf"], json!([{"$ref": "#/components/schemas/Stage"}]), "{stage}");
        assert_eq!(document["components"]["schemas"]["Include"]["default"], "own");
    }

    #[test]
    fn servers_are_the_listening_address() {
        let document = document(all_methods(), "127.0.0.1:41234".parse().unwrap()).unwrap();
        assert_eq!(document["servers"][0]["url"], "http://127.0.0.1:41234/");
        assert_eq!(document["servers"][1]["url"], "ws://127.0.0.1:41234/");
        let document = document_at("[::1]:8081");
        assert_eq!(document["servers"][0]["url"], "http://[::1]:8081/");
        let document = document_at("0.0.0.0:9000");
        assert_eq!(document["servers"][0]["url"], "http://{host}:9000/");
        assert_eq!(document["servers"][0]["variables"]["host"]["default"], "127.0.0.1");
        let document = document_at("[::]:9000");
        assert_eq!(document["servers"][1]["url"], "ws://{host}:9000/");
        assert_eq!(document["servers"][1]["variables"]["host"]["default"], "[::1]");
    }

    fn document_at(addr: &str) -> Value {
        document(all_methods(), addr.parse().unwrap()).unwrap()
    }
}

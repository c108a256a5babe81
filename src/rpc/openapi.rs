//! The API description, `openapi/openapi.yaml`, made from the code: the hand-written frame
//! (`openapi/frame.yaml`: the overview, the paths, the JSON-RPC envelope) plus what the code
//! says of each method: the schema of its params and of its answer, derived from the wire
//! types ([`super::wire`], [`crate::domain::opportunity::CreateOpportunity`], the answers) with
//! `schemars`, its request and response envelopes, and the error codes of `src/error.rs`.
//! `rpc.discover` is built from the same document ([`super::discover`]).
//!
//! The committed file is what [`yaml`] returns: a unit test fails when they differ, and
//! `UPDATE_OPENAPI=1 cargo test --lib openapi` rewrites it.

use std::borrow::Cow;
use std::collections::BTreeSet;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};
use serde_norway::{Mapping, Value as Yaml};

use crate::domain::opportunity::{CreateOpportunity, Opportunity};
use crate::error::{CODES, INTERNAL_ERROR, INVALID_PARAMS, SERVICE_UNAVAILABLE, trpc_name};
use crate::schema;

use super::wire::{
    ChangeStateParams, ChangesPage, ChangesParams, GetParams, ListParams, OpportunityPage, SubscribeParams,
    UnsubscribeParams, UpdateParams,
};

const FRAME: &str = include_str!("../../openapi/frame.yaml");

/// Where the schemas are, in both documents.
pub const SCHEMAS: &str = "#/components/schemas/";

type SchemaFn = fn(&mut SchemaGenerator) -> Schema;
/// A note on an answer, and a rule of it beyond its schema.
type ResultNote = (&'static str, fn() -> Value);

fn of<T: JsonSchema + ?Sized>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// What the description says of a method.
pub struct Method {
    /// The dotted name.
    pub name: &'static str,
    /// The names of its envelopes: `<prefix>Request`, `<prefix>Response`.
    pub prefix: &'static str,
    /// One line, for `rpc.discover`.
    pub summary: &'static str,
    /// The params object.
    pub params: SchemaFn,
    /// Whether the params may be left out (the same as `{}`).
    pub params_optional: bool,
    /// What a one-element array of params holds, when it is not the params object.
    pub array_item: Option<SchemaFn>,
    /// The description of the params.
    pub params_description: &'static str,
    /// The answer.
    pub result: SchemaFn,
    /// A note on the answer and a rule of it beyond its schema (a create answers version 1).
    pub result_note: Option<ResultNote>,
}

const OBJECT_OR_ARRAY: &str = "The params object, or a one-element array holding it.";
const MAY_BE_LEFT_OUT: &str =
    "The params object, or a one-element array holding it; may be left out (the same as `{}`).";

/// Every method but `rpc.discover` (whose envelopes are the frame's), in the order of the
/// overview's table.
pub const METHODS: &[Method] = &[
    Method {
        name: super::opportunity::CREATE,
        prefix: "CreateOpportunity",
        summary: "Create an opportunity in the caller's workspace; answered once it is durably stored.",
        params: of::<CreateOpportunity>,
        params_optional: false,
        array_item: None,
        params_description: OBJECT_OR_ARRAY,
        result: of::<Opportunity>,
        result_note: Some((
            "The stored opportunity, at version 1 (an idempotent replay answers the first call's opportunity again).",
            || json!({"properties": {"version": {"const": 1}}}),
        )),
    },
    Method {
        name: super::lifecycle::GET,
        prefix: "GetOpportunity",
        summary: "Read one opportunity, archived or not.",
        params: of::<GetParams>,
        params_optional: false,
        array_item: None,
        params_description: OBJECT_OR_ARRAY,
        result: of::<Opportunity>,
        result_note: None,
    },
    Method {
        name: super::list::LIST,
        prefix: "ListOpportunities",
        summary: "List opportunities of a workspace (or every one readable there), filtered, ordered, in keyset pages.",
        params: of::<ListParams>,
        params_optional: true,
        array_item: None,
        params_description: MAY_BE_LEFT_OUT,
        result: of::<OpportunityPage<'static>>,
        result_note: None,
    },
    Method {
        name: super::lifecycle::UPDATE,
        prefix: "UpdateOpportunity",
        summary: "Change some fields of an opportunity at the expected version.",
        params: of::<UpdateParams>,
        params_optional: false,
        array_item: None,
        params_description: OBJECT_OR_ARRAY,
        result: of::<Opportunity>,
        result_note: None,
    },
    Method {
        name: super::lifecycle::ARCHIVE,
        prefix: "ArchiveOpportunity",
        summary: "Archive an opportunity (nothing is deleted).",
        params: of::<ChangeStateParams>,
        params_optional: false,
        array_item: None,
        params_description: OBJECT_OR_ARRAY,
        result: of::<Opportunity>,
        result_note: None,
    },
    Method {
        name: super::lifecycle::RESTORE,
        prefix: "RestoreOpportunity",
        summary: "Restore an archived opportunity.",
        params: of::<ChangeStateParams>,
        params_optional: false,
        array_item: None,
        params_description: OBJECT_OR_ARRAY,
        result: of::<Opportunity>,
        result_note: None,
    },
    Method {
        name: super::changes::CHANGES,
        prefix: "ListChanges",
        summary: "Page through the change events after `since`, in commit order (HTTP or WebSocket).",
        params: of::<ChangesParams>,
        params_optional: true,
        array_item: None,
        params_description: MAY_BE_LEFT_OUT,
        result: of::<ChangesPage<'static>>,
        result_note: None,
    },
    Method {
        name: super::changes::SUBSCRIBE,
        prefix: "Subscribe",
        summary: "WebSocket only: stored events after `since`, then live ones, as opportunity.changed notifications.",
        params: of::<SubscribeParams>,
        params_optional: true,
        array_item: None,
        params_description: MAY_BE_LEFT_OUT,
        result: of::<schema::SubscriptionId>,
        result_note: None,
    },
    Method {
        name: super::changes::UNSUBSCRIBE,
        prefix: "Unsubscribe",
        summary: "End a subscription of this connection.",
        params: of::<UnsubscribeParams>,
        params_optional: false,
        array_item: Some(of::<schema::SubscriptionId>),
        params_description: "`{\"subscription\": id}`, or the id or that object alone in a one-element array (`[id]`, `[{\"subscription\": id}]`).",
        result: of::<schema::Unsubscribed>,
        result_note: None,
    },
];

/// The frame's envelopes of `rpc.discover`.
const DISCOVER_PREFIX: &str = "Discover";

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("{SCHEMAS}{name}") })
}

/// The component a `$ref` schema names.
pub fn referred(schema: &Schema) -> &str {
    schema.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix(SCHEMAS)).expect("a component")
}

/// A generator whose definitions go under `components.schemas`: of what callers send (an
/// `Option` field may be left out), or of what the service answers (every field is there).
pub fn generator(answers: bool) -> SchemaGenerator {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    settings.meta_schema = None;
    if answers {
        settings = settings.for_serialize();
    }
    settings.into_generator()
}

fn request(method: &Method, generator: &mut SchemaGenerator) -> Value {
    let params = (method.params)(generator).to_value();
    // A method that also takes its one value alone in the array (`[id]`) takes the object there
    // too (`[{"subscription": id}]`).
    let item = method
        .array_item
        .map_or_else(|| params.clone(), |item| json!({"oneOf": [item(generator).to_value(), params.clone()]}));
    let mut required = vec!["jsonrpc", "method"];
    if !method.params_optional {
        required.push("params");
    }
    json!({
        "description": format!("A JSON-RPC request calling `{}`.", method.name),
        "type": "object",
        "required": required,
        "properties": {
            "jsonrpc": reference("JsonRpcVersion"),
            "id": reference("JsonRpcId"),
            "method": {"type": "string", "const": method.name},
            "params": {
                "description": method.params_description,
                "oneOf": [params, {"type": "array", "minItems": 1, "maxItems": 1, "items": item}],
            },
        },
    })
}

fn response(method: &Method, generator: &mut SchemaGenerator) -> Value {
    let mut result = (method.result)(generator).to_value();
    if let Some((note, rule)) = method.result_note {
        result = json!({"description": note, "allOf": [result, rule()]});
    }
    json!({
        "description": format!("The successful answer to `{}`.", method.name),
        "type": "object",
        "additionalProperties": false,
        "required": ["jsonrpc", "id", "result"],
        "properties": {
            "jsonrpc": reference("JsonRpcVersion"),
            "id": reference("JsonRpcId"),
            "result": result,
        },
    })
}

/// `JsonRpcError`'s rules from `src/error.rs`: each code's `data.code` and `data.httpStatus`,
/// the field errors of -32602, and the two kinds of -32603 (an internal failure with its
/// `requestId`, an unavailable service that may be retried).
fn error_rules() -> Value {
    let rules: Vec<Value> = CODES
        .iter()
        .map(|&code| {
            let (name, status) = trpc_name(code);
            let data = match code {
                INVALID_PARAMS => json!({
                    "properties": {
                        "code": {"const": name},
                        "httpStatus": {"const": status},
                        "fieldErrors": {"type": "object"},
                        "formErrors": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["fieldErrors", "formErrors"],
                }),
                INTERNAL_ERROR => json!({"oneOf": [
                    {
                        "properties": {"code": {"const": name}, "httpStatus": {"const": status}, "requestId": {"type": "string"}},
                        "required": ["requestId"],
                    },
                    {
                        "properties": {
                            "code": {"const": SERVICE_UNAVAILABLE.0},
                            "httpStatus": {"const": SERVICE_UNAVAILABLE.1},
                            "retryable": {"const": true},
                        },
                        "required": ["retryable"],
                    },
                ]}),
                _ => json!({"properties": {"code": {"const": name}, "httpStatus": {"const": status}}}),
            };
            json!({"if": {"properties": {"code": {"const": code}}}, "then": {"properties": {"data": data}}})
        })
        .collect();
    Value::Array(rules)
}

/// Every tRPC name an error can carry.
fn error_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = Vec::new();
    for &code in CODES {
        let name = trpc_name(code).0;
        if code == INTERNAL_ERROR {
            names.push(SERVICE_UNAVAILABLE.0);
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The integer formats schemars gives Rust's integer types (`int32`, `uint8`, …): the bounds
/// say what is allowed, not the Rust type.
fn drop_integer_formats(schema: &mut Map<String, Value>) {
    if schema.get("format").and_then(Value::as_str).is_some_and(|f| f.starts_with("int") || f.starts_with("uint")) {
        schema.remove("format");
    }
}

/// A param with a default never holds it in the property's own schema: generators such as
/// openapi-typescript take such a property for one that is always present, and would make
/// callers send it. It goes one level down, in an `allOf` of one schema.
fn default_one_level_down(property: &mut Value) {
    let Value::Object(map) = property else { return };
    if !map.contains_key("default") {
        return;
    }
    let description = map.remove("description");
    let inner = std::mem::take(map);
    if let Some(description) = description {
        map.insert("description".into(), description);
    }
    map.insert("allOf".into(), json!([inner]));
}

/// `anyOf: [{anyOf: [a, b]}, null]` (an `Option` of an untagged enum) is `anyOf: [a, b, null]`.
fn flatten_any_of(schema: &mut Map<String, Value>) {
    let Some(Value::Array(members)) = schema.get_mut("anyOf") else { return };
    let mut flat = Vec::with_capacity(members.len());
    for member in members.drain(..) {
        match member {
            Value::Object(mut inner) if inner.len() == 1 && inner.contains_key("anyOf") => {
                if let Some(Value::Array(nested)) = inner.remove("anyOf") {
                    flat.extend(nested);
                }
            }
            other => flat.push(other),
        }
    }
    *members = flat;
}

/// What every generated schema goes through: the integer formats out, defaults of params one
/// level down, recursively.
fn tidy(value: &mut Value) {
    match value {
        Value::Object(map) => {
            drop_integer_formats(map);
            flatten_any_of(map);
            if let Some(Value::Object(properties)) = map.get_mut("properties") {
                properties.values_mut().for_each(default_one_level_down);
            }
            map.values_mut().for_each(tidy);
        }
        Value::Array(items) => items.iter_mut().for_each(tidy),
        _ => {}
    }
}

/// The order keywords are written in; the others follow in the alphabet's.
const KEYWORD_ORDER: &[&str] = &[
    "$ref",
    "title",
    "description",
    "type",
    "format",
    "const",
    "enum",
    "default",
    "additionalProperties",
    "required",
    "minProperties",
    "properties",
    "items",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "multipleOf",
    "oneOf",
    "anyOf",
    "allOf",
    "if",
    "then",
    "else",
    "discriminator",
    "examples",
];

/// A JSON value as YAML, keywords in [`KEYWORD_ORDER`] and properties with the required ones
/// first (in the order of `required`, the fields' order), then the others by name.
fn to_yaml(value: &Value) -> Yaml {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            let rank = |k: &str| KEYWORD_ORDER.iter().position(|w| *w == k).unwrap_or(KEYWORD_ORDER.len());
            keys.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
            let mut out = Mapping::new();
            for key in keys {
                let converted = if key == "properties"
                    && let Value::Object(properties) = &map[key]
                {
                    let required: Vec<&str> = map
                        .get("required")
                        .and_then(Value::as_array)
                        .map(|r| r.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    let mut names: Vec<&String> = properties.keys().collect();
                    let place = |n: &str| required.iter().position(|r| *r == n).unwrap_or(required.len());
                    names.sort_by(|a, b| place(a).cmp(&place(b)).then(a.cmp(b)));
                    let mut ordered = Mapping::new();
                    for name in names {
                        ordered.insert(Yaml::String(name.clone()), to_yaml(&properties[name]));
                    }
                    Yaml::Mapping(ordered)
                } else {
                    to_yaml(&map[key])
                };
                out.insert(Yaml::String(key.clone()), converted);
            }
            Yaml::Mapping(out)
        }
        Value::Array(items) => Yaml::Sequence(items.iter().map(to_yaml).collect()),
        other => serde_norway::to_value(other).expect("JSON is YAML"),
    }
}

fn mapping<'a>(value: &'a mut Yaml, path: &[&str]) -> &'a mut Mapping {
    let mut here = value;
    for key in path {
        here = here.get_mut(*key).unwrap_or_else(|| panic!("openapi/frame.yaml has no {}", path.join(".")));
    }
    here.as_mapping_mut().unwrap_or_else(|| panic!("openapi/frame.yaml: {} is not a mapping", path.join(".")))
}

/// The whole document, keys in the order they are written.
pub fn document() -> Yaml {
    let (mut sent, mut answered) = (generator(false), generator(true));
    let mut envelopes: Vec<(String, Value)> = Vec::new();
    for method in METHODS {
        envelopes.push((format!("{}Request", method.prefix), request(method, &mut sent)));
    }
    for method in METHODS {
        envelopes.push((format!("{}Response", method.prefix), response(method, &mut answered)));
    }
    let mut definitions = sent.take_definitions(true);
    for (name, schema) in answered.take_definitions(true) {
        if let Some(other) = definitions.get(&name) {
            assert_eq!(other, &schema, "{name} is sent and answered in two forms: give them two names");
        }
        definitions.insert(name, schema);
    }

    let mut document: Yaml = serde_norway::from_str(FRAME).expect("openapi/frame.yaml is YAML");
    let schemas = mapping(&mut document, &["components", "schemas"]);

    let prefixes: Vec<&str> = METHODS.iter().map(|m| m.prefix).chain([DISCOVER_PREFIX]).collect();
    let names: Vec<&str> = METHODS.iter().map(|m| m.name).chain([super::discover::DISCOVER]).collect();
    let requests: Vec<Value> = prefixes.iter().map(|p| reference(&format!("{p}Request"))).collect();
    let request_schema = schemas.get_mut("JsonRpcRequest").and_then(Yaml::as_mapping_mut).expect("JsonRpcRequest");
    request_schema.insert("oneOf".into(), to_yaml(&Value::Array(requests)));
    // The mapping in the order of the methods (a YAML mapping keeps it; a JSON map would not).
    let mut by_method = Mapping::new();
    for (name, prefix) in names.iter().zip(&prefixes) {
        by_method.insert(Yaml::String(name.to_string()), Yaml::String(format!("{SCHEMAS}{prefix}Request")));
    }
    let mut discriminator = Mapping::new();
    discriminator.insert("propertyName".into(), "method".into());
    discriminator.insert("mapping".into(), Yaml::Mapping(by_method));
    request_schema.insert("discriminator".into(), Yaml::Mapping(discriminator));

    let answers: Vec<Value> = prefixes.iter().map(|p| reference(&format!("{p}Response"))).collect();
    let success = schemas.get_mut("JsonRpcSuccessResponse").and_then(Yaml::as_mapping_mut).expect("success");
    success.insert("anyOf".into(), to_yaml(&Value::Array(answers)));

    let error = schemas.get_mut("JsonRpcError").and_then(Yaml::as_mapping_mut).expect("JsonRpcError");
    let code = error
        .get_mut("properties")
        .and_then(|p| p.get_mut("code"))
        .and_then(Yaml::as_mapping_mut)
        .expect("JsonRpcError.properties.code");
    code.insert("enum".into(), to_yaml(&json!(CODES)));
    error.insert("allOf".into(), to_yaml(&error_rules()));
    let data_code = schemas
        .get_mut("ErrorData")
        .and_then(|d| d.get_mut("properties"))
        .and_then(|p| p.get_mut("code"))
        .and_then(Yaml::as_mapping_mut)
        .expect("ErrorData.properties.code");
    data_code.insert("enum".into(), to_yaml(&json!(error_names())));

    for (name, mut schema) in envelopes {
        tidy(&mut schema);
        schemas.insert(Yaml::String(name), to_yaml(&schema));
    }
    let taken: BTreeSet<String> = schemas.keys().filter_map(Yaml::as_str).map(str::to_string).collect();
    for (name, mut schema) in definitions {
        assert!(!taken.contains(&name), "the wire type {name} has the name of a schema of openapi/frame.yaml");
        tidy(&mut schema);
        schemas.insert(Yaml::String(name), to_yaml(&schema));
    }
    document
}

const HEADER: &str = "# GENERATED from openapi/frame.yaml and the code's wire types (src/rpc/openapi.rs);\n\
# do not edit: edit those, then run `UPDATE_OPENAPI=1 cargo test --lib openapi`.\n\
# A unit test fails when this file is not what the code generates.\n";

/// The text of `openapi/openapi.yaml`: a blank line before each top-level key and each
/// component, and instants quoted (YAML 1.1 readers such as js-yaml and PyYAML take an
/// unquoted `2027-03-31T19:00:00Z` for a date, not a string).
pub fn yaml() -> String {
    let text = serde_norway::to_string(&document()).expect("YAML serializes");
    let mut out = String::from(HEADER);
    let mut in_components = false;
    for line in text.lines() {
        let top = !line.is_empty() && !line.starts_with(' ');
        if top {
            in_components = line == "components:";
        }
        let component = in_components && line.starts_with("    ") && !line[4..].starts_with(' ') && line.ends_with(':');
        if (top && out.len() > HEADER.len()) || component {
            out.push('\n');
        }
        out.push_str(&quote_instant(line));
        out.push('\n');
    }
    out
}

/// `key: 2027-03-31T19:00:00Z` or `- 2027-…` with the instant quoted.
fn quote_instant(line: &str) -> Cow<'_, str> {
    let value_at = match line.trim_start().strip_prefix("- ") {
        Some(rest) => line.len() - rest.len(),
        None => match line.find(": ") {
            Some(i) => i + 2,
            None => return Cow::Borrowed(line),
        },
    };
    let value = &line[value_at..];
    let b = value.as_bytes();
    let instant = b.len() >= 11
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'-'
        && b[8..10].iter().all(u8::is_ascii_digit)
        && matches!(b[10], b'T' | b't' | b' ');
    if instant { Cow::Owned(format!("{}'{value}'", &line[..value_at])) } else { Cow::Borrowed(line) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.yaml");

    #[test]
    fn instants_are_quoted_and_nothing_else() {
        assert_eq!(quote_instant("      - 2026-12-01T07:30:00Z"), "      - '2026-12-01T07:30:00Z'");
        assert_eq!(quote_instant("  at: 2027-03-31t19:00:00+02:00"), "  at: '2027-03-31t19:00:00+02:00'");
        for kept in ["  id: 550e8400-e29b-41d4-a716-446655440000", "  - 2026", "  date: 2026-12-01", "plain: text"] {
            assert_eq!(quote_instant(kept), kept);
        }
    }

    /// The event's `type` values in the document are the feed's (`EventKind::as_str`).
    #[test]
    fn event_types_are_the_feeds() {
        use crate::db::events::EventKind;
        let document = serde_json::to_value(document()).unwrap();
        let types = &document["components"]["schemas"]["OpportunityEvent"]["properties"]["type"]["enum"];
        let kinds = [EventKind::Created, EventKind::Updated, EventKind::Archived, EventKind::Restored];
        assert_eq!(types, &json!(kinds.map(EventKind::as_str)));
    }

    /// The committed document is the generated one; `UPDATE_OPENAPI=1` rewrites it.
    #[test]
    fn the_committed_openapi_yaml_is_what_the_code_generates() {
        let generated = yaml();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(COMMITTED, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(COMMITTED).unwrap();
        assert!(
            committed == generated,
            "openapi/openapi.yaml is not what the code generates: run `UPDATE_OPENAPI=1 cargo test --lib openapi` and commit it"
        );
    }
}

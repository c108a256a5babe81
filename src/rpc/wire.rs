//! The wire types of the methods whose params are not a domain type: what each params object
//! may hold, each field's type and whether it may be absent or `null`. The readers
//! (`lifecycle`, `list`, `changes`) accept exactly these fields ([`field_names`]) and read them
//! by hand, every problem at once; the API description (`super::openapi`) is derived from these
//! types, and `tests/api/openapi.rs` sends values to the running service and to the schemas and
//! checks that both decide alike (`null` for every field of every method, the bounds and
//! patterns of a create's). A create's params are [`crate::domain::opportunity::CreateOpportunity`]; the answers
//! are [`crate::domain::opportunity::Opportunity`], [`OpportunityPage`], [`ChangesPage`] and
//! [`crate::db::events::OpportunityEvent`].
//!
//! `Option<T>` is a field that may be absent or `null` (both mean "not given"); a field that
//! may be absent but not `null` says `default, skip_serializing_if = "Option::is_none"`
//! (schemars' way to say "optional, no default value").

use std::borrow::Cow;
use std::sync::LazyLock;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::domain::opportunity::{CreateOpportunity, Opportunity, PipelineType, Priority, Source, Stage, WireValues};
use crate::schema;

/// An answer as it goes out: serialized once, straight into a `RawValue`. (`RawValue::from_string`
/// would parse the text again to check it: 11% of the service's CPU under list pages.)
pub fn answer<T: Serialize + ?Sized>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("an answer serializes")
}

/// The names of the fields a wire type's params object may hold (its schema's properties):
/// what the method's reader accepts; any other name is refused as an unknown field.
pub fn field_names<T: JsonSchema>() -> Vec<String> {
    let schema = super::openapi::generator(false).into_root_schema_for::<T>();
    let properties = schema.get("properties").and_then(Value::as_object);
    properties.map(|p| p.keys().cloned().collect()).unwrap_or_default()
}

/// The fields of each method's params.
pub static CREATE_FIELDS: LazyLock<Vec<String>> = LazyLock::new(field_names::<CreateOpportunity>);
pub static GET_FIELDS: LazyLock<Vec<String>> = LazyLock::new(field_names::<GetParams>);
pub static STATE_FIELDS: LazyLock<Vec<String>> = LazyLock::new(field_names::<ChangeStateParams>);
pub static UPDATE_FIELDS: LazyLock<Vec<String>> = LazyLock::new(field_names::<UpdateParams>);
pub static LIST_FIELDS: LazyLock<Vec<String>> = LazyLock::new(field_names::<ListParams>);
pub static CHANGES_FIELDS: LazyLock<Vec<String>> = LazyLock::new(field_names::<ChangesParams>);
pub static SUBSCRIBE_FIELDS: LazyLock<Vec<String>> = LazyLock::new(field_names::<SubscribeParams>);

/// The params of `opportunity.get`.
#[derive(JsonSchema)]
#[schemars(
    rename = "OpportunityRef",
    rename_all = "camelCase",
    deny_unknown_fields,
    description = "Params of `opportunity.get`: the opportunity's `id` and, optionally, the workspace the call acts in (else `X-Workspace-Id`, else the token's only workspace). An opportunity that does not exist and one the caller may not read both get NOT_FOUND (-32004)."
)]
pub struct GetParams {
    #[schemars(with = "schema::Uuid")]
    pub id: Uuid,
    pub workspace_id: Option<Uuid>,
}

/// The params of `opportunity.archive` and `opportunity.restore`.
#[derive(JsonSchema)]
#[schemars(
    rename = "ChangeStateParams",
    rename_all = "camelCase",
    deny_unknown_fields,
    description = "Params of `opportunity.archive` and `opportunity.restore`. `expectedVersion` must be the stored `version` (else CONFLICT with `data.reason: \"version_mismatch\"` and `data.currentVersion`). Archiving an archived opportunity, or restoring one that is not archived, changes nothing and answers it as stored."
)]
pub struct ChangeStateParams {
    #[schemars(with = "schema::Uuid")]
    pub id: Uuid,
    #[schemars(schema_with = "schema::expected_version")]
    pub expected_version: i32,
    pub workspace_id: Option<Uuid>,
    #[schemars(with = "Option<schema::IdempotencyKey>")]
    pub idempotency_key: Option<String>,
}

/// The params of `opportunity.update`: those of an archive ([`ChangeStateParams`]: the
/// opportunity, its expected version, the workspace, the key) and, each optional, every field a
/// create takes but its workspace and key, with the create's rules ([`CreateOpportunity`]).
/// Absent is unchanged, `null` clears a field that may be unset; a create's defaults do not
/// apply.
pub enum UpdateParams {}

impl JsonSchema for UpdateParams {
    fn schema_name() -> Cow<'static, str> {
        "UpdateOpportunityParams".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut schema = ChangeStateParams::json_schema(generator);
        let create = CreateOpportunity::json_schema(generator);
        let create = create.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
        let properties = schema.ensure_object().entry("properties").or_insert_with(|| json!({}));
        let properties = properties.as_object_mut().expect("an object's properties");
        for (name, mut field) in create {
            if properties.contains_key(&name) {
                continue;
            }
            // A create's default (and what its description says of it) is not an update's.
            if let Some(field) = field.as_object_mut()
                && field.remove("default").is_some()
            {
                field.remove("description");
            }
            properties.insert(name, field);
        }
        schema.insert("description".into(), UPDATE_DESCRIPTION.into());
        // `id`, `expectedVersion` and at least one field to change.
        schema.insert("minProperties".into(), 3.into());
        schema
    }
}

const UPDATE_DESCRIPTION: &str = "Params of `opportunity.update`: `id`, `expectedVersion` and at least one field to change. A field that is absent stays as it is; `null` clears an optional field (`solutionFamilies: null` clears the list, `ownerUserId: null` gives the opportunity back to the caller); `null` for a required field is refused. Every rule of a create applies to the named fields, and the rules across fields hold for the opportunity after the change. A change of `stage` to \"won\" or \"lost\" that names no `probability` sets it to 100 or 0; a change away from \"lost\" that names no `lostReasonCategory` clears it. When every named field already has the named value nothing is written and the answer keeps its `version`. An archived opportunity is refused (CONFLICT, `data.reason: \"archived\"`).";

/// The params of `opportunity.list`, all optional.
#[derive(JsonSchema)]
#[schemars(
    rename = "ListOpportunitiesParams",
    rename_all = "camelCase",
    deny_unknown_fields,
    description = "Params of `opportunity.list`, all optional. Enum filters match any of the listed values (an empty list matches nothing). `expectedCloseFrom` ≤ `expectedCloseDate` < `expectedCloseTo`; `updatedAt` ≥ `updatedSince`; `titleContains` is a literal, case-insensitive substring. The order is total: the `orderBy` field with `null` values last in both directions, then `id` in the same direction. Pages are keyset pages: pass `nextCursor` back as `cursor` with the same params (only `limit` may change); a cursor used with other params, another workspace, or altered, is a field error on `cursor`."
)]
pub struct ListParams {
    pub workspace_id: Option<Uuid>,
    #[schemars(with = "Option<schema::Include>")]
    pub include: Option<bool>,
    #[schemars(length(max = super::params::max_filter_items(Stage::VALUES)))]
    pub stage: Option<Vec<Stage>>,
    #[schemars(length(max = super::params::max_filter_items(PipelineType::VALUES)))]
    pub pipeline_type: Option<Vec<PipelineType>>,
    #[schemars(length(max = super::params::max_filter_items(Priority::VALUES)))]
    pub priority: Option<Vec<Priority>>,
    #[schemars(length(max = super::params::max_filter_items(Source::VALUES)))]
    pub source: Option<Vec<Source>>,
    pub customer_id: Option<Uuid>,
    pub owner_user_id: Option<Uuid>,
    pub site_id: Option<Uuid>,
    pub is_closed: Option<bool>,
    #[schemars(with = "Option<schema::ArchivedFilter>")]
    pub archived: Option<String>,
    #[schemars(with = "Option<schema::DateTimeInput>")]
    pub expected_close_from: Option<String>,
    #[schemars(with = "Option<schema::DateTimeInput>")]
    pub expected_close_to: Option<String>,
    #[schemars(with = "Option<schema::DateTimeInput>")]
    pub updated_since: Option<String>,
    /// Literal substring of the title, compared in Unicode lowercase (final sigma as sigma): `café` finds `Éclairage CAFÉ`.
    #[schemars(length(min = 1, max = crate::domain::opportunity::MAX_TITLE_CHARS))]
    pub title_contains: Option<String>,
    #[schemars(with = "Option<schema::ListOrderBy>")]
    pub order_by: Option<String>,
    #[schemars(with = "Option<schema::SortOrder>")]
    pub order: Option<String>,
    #[schemars(with = "Option<schema::ListLimit>")]
    pub limit: Option<i64>,
    /// The `nextCursor` of the page before, unchanged.
    #[schemars(length(max = super::list::MAX_CURSOR_CHARS))]
    pub cursor: Option<String>,
}

/// The params of `opportunity.changes`, all optional.
#[derive(JsonSchema)]
#[schemars(
    rename = "ChangesParams",
    rename_all = "camelCase",
    deny_unknown_fields,
    description = "Params of `opportunity.changes`. Without `since`, from the oldest event kept. A `since` this service never issued is a field error on `since`; one older than what is kept (`EVENT_RETENTION`) gets CONFLICT with `data.reason: \"events_expired\"`."
)]
pub struct ChangesParams {
    pub workspace_id: Option<Uuid>,
    #[schemars(with = "Option<schema::Include>")]
    pub include: Option<bool>,
    #[schemars(with = "Option<schema::EventId>")]
    pub since: Option<String>,
    #[schemars(with = "Option<schema::ChangesLimit>")]
    pub limit: Option<i64>,
}

/// A subscription's filter: one value, or an array of at most
/// [`super::params::max_filter_items`] of them; `null` for none.
fn one_or_many<T: JsonSchema + WireValues>(generator: &mut SchemaGenerator) -> Schema {
    let one = generator.subschema_for::<T>();
    schemars::json_schema!({"anyOf": [
        one,
        {"type": "array", "items": one, "maxItems": super::params::max_filter_items(T::VALUES)},
        {"type": "null"},
    ]})
}

/// The params of `opportunity.subscribe`, all optional.
#[derive(JsonSchema)]
#[schemars(
    rename = "SubscribeParams",
    rename_all = "camelCase",
    deny_unknown_fields,
    description = "Params of `opportunity.subscribe` (WebSocket only; over HTTP it is refused with BAD_REQUEST). With `since`, the stored events after it come first, then live ones; without it, the events committed after the answer. `stage` and `pipelineType` take one value or an array. Notifications: method `opportunity.changed`, params `{\"subscription\": id, \"result\": event}`. A subscriber with more than 1,000 events undelivered is ended with a final notification whose params hold `error` (CONFLICT, `data.reason: \"slow_consumer\"`, `data.resumeFrom`); when the token expires, the same with UNAUTHORIZED. At most 16 subscriptions per connection (CONFLICT, `data.reason: \"too_many_subscriptions\"`)."
)]
pub struct SubscribeParams {
    pub workspace_id: Option<Uuid>,
    #[schemars(with = "Option<schema::Include>")]
    pub include: Option<bool>,
    #[schemars(with = "Option<schema::EventId>")]
    pub since: Option<String>,
    #[schemars(schema_with = "one_or_many::<Stage>", default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Vec<Stage>>,
    #[schemars(schema_with = "one_or_many::<PipelineType>", default, skip_serializing_if = "Option::is_none")]
    pub pipeline_type: Option<Vec<PipelineType>>,
    pub owner_user_id: Option<Uuid>,
}

/// The params of `opportunity.unsubscribe`.
#[derive(JsonSchema)]
#[schemars(
    rename = "UnsubscribeParams",
    deny_unknown_fields,
    description = "`{\"subscription\": id}`, or the id or that object alone in a one-element array (`[id]`, `[{\"subscription\": id}]`)."
)]
pub struct UnsubscribeParams {
    #[schemars(with = "schema::SubscriptionId")]
    pub subscription: String,
}

/// One page of `opportunity.list`.
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(
    deny_unknown_fields,
    description = "One page of `opportunity.list`; `nextCursor` is `null` on the last page."
)]
pub struct OpportunityPage<'a> {
    pub items: &'a [Opportunity],
    pub next_cursor: Option<String>,
}

/// One page of `opportunity.changes`.
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(
    deny_unknown_fields,
    description = "The events after `since`, in order. `nextSince` is the last event's id, or `since` itself when there are none (pass it back to poll); never `null`."
)]
pub struct ChangesPage<'a> {
    /// Each an [`OpportunityEvent`], as stored.
    #[schemars(with = "Vec<crate::db::events::OpportunityEvent<'static>>")]
    pub events: Vec<&'a RawValue>,
    #[schemars(with = "schema::EventId")]
    pub next_since: String,
}

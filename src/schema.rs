//! The JSON forms of the wire that have a name of their own in the API description: the
//! scalars (a UUID, an instant as sent and as answered, an idempotency key, an event id) and
//! the params with a default (`BudgetConfirmed`, `Include`, `ListLimit`, …). Their schemas are
//! written here once, from the constants the readers check against; the wire types of
//! `crate::rpc::wire` and the answers (`Opportunity`, the pages, the events) refer to them, and
//! `crate::rpc::openapi` puts them under `components.schemas`.
//!
//! The types are never built: each is the name of a schema (`#[schemars(with = "Uuid")]`).

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use crate::domain::opportunity::{MAX_SOLUTION_FAMILIES, MAX_SOLUTION_FAMILY_CHARS, MAX_TEXT_CHARS, MAX_TITLE_CHARS};

/// Declares a named schema: `named!(Name, { json })` (plus doc comments).
macro_rules! named {
    ($(#[$meta:meta])* $name:ident, $schema:tt) => {
        $(#[$meta])*
        pub enum $name {}

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

named!(
    /// A UUID as a caller sends it: any case.
    Uuid,
    {"description": "UUID; accepted in any case.", "type": "string", "format": "uuid"}
);

named!(
    /// A UUID as the service answers it.
    UuidLower,
    {
        "description": "UUID, returned lowercase and hyphenated.",
        "type": "string",
        "format": "uuid",
        "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    }
);

named!(
    /// An instant as a caller sends it (`crate::domain::opportunity::parse_instant`).
    DateTimeInput,
    {
        "description": "RFC 3339 date-time **with** an offset (`Z` or `±hh:mm`), e.g. `2026-12-01T09:30:00+02:00`, in RFC 3339's exact shape with ASCII digits (`t` and `z` in lower case too). Date-only or offset-less strings, other shapes (a space for the `T`, `+0200`, an offset written with U+2212 `−`) and second 60 (a leap second) are refused. Years 1970–2200, of the instant in UTC. Stored as an instant to the microsecond.\n\nThe pattern says the shape and the years as written (the range applies to the instant in UTC); `format: date-time` checks the calendar.",
        "type": "string",
        "format": "date-time",
        "pattern": "^(19[7-9][0-9]|2[01][0-9]{2}|2200)-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-5][0-9](\\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$",
        "examples": ["2026-12-01T09:30:00+02:00"]
    }
);

named!(
    /// An instant as the service answers it (`crate::domain::opportunity::format_instant`).
    DateTimeUtc,
    {
        "description": "Instant in UTC with `Z`; fractional seconds (up to microseconds) only when they are not zero, e.g. `2026-12-01T07:30:00Z`, `2026-12-01T07:30:00.125Z`.",
        "type": "string",
        "format": "date-time",
        "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,5}[1-9])?Z$",
        "examples": ["2026-12-01T07:30:00Z", "2026-12-01T07:30:00.125Z"]
    }
);

/// The most characters of an idempotency key.
pub const MAX_IDEMPOTENCY_KEY_CHARS: u64 = 255;

named!(
    /// An idempotency key (`crate::domain::opportunity::validate_printable_ascii`).
    IdempotencyKey,
    {
        "description": "1–255 printable ASCII characters (0x20–0x7E).",
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_IDEMPOTENCY_KEY_CHARS,
        "pattern": format!("^[\\x20-\\x7E]{{1,{MAX_IDEMPOTENCY_KEY_CHARS}}}$")
    }
);

named!(
    /// An event id (`crate::db::events::parse_event_id`).
    EventId,
    {
        "description": "An event's id: opaque, increasing in commit order (also as text). Pass the last one you got back as `since`.",
        "type": "string",
        "pattern": "^[0-9]{20}$"
    }
);

named!(
    /// `budgetConfirmed` of a create.
    BudgetConfirmed,
    {"description": "Whether the budget is confirmed; `false` when not given.", "type": "boolean", "default": false}
);

named!(
    /// `include` of a list, a feed or a subscription.
    Include,
    {
        "description": "Whose opportunities (or events): `own` (the default), the workspace's own; `visible`, every one the workspace may read (its own, and the shared and global ones of other workspaces).",
        "type": "string",
        "enum": crate::rpc::list::INCLUDE_VALUES,
        "default": "own"
    }
);

named!(
    /// `archived` of a list (`crate::db::list::Archived`).
    ArchivedFilter,
    {
        "description": "Archived opportunities left out (`exclude`, the default), alone (`only`), or with the others (`include`).",
        "type": "string",
        "enum": crate::rpc::list::ARCHIVED_VALUES,
        "default": "exclude"
    }
);

named!(
    /// `orderBy` of a list (`crate::db::list::OrderBy`).
    ListOrderBy,
    {
        "description": "The field `opportunity.list` orders by; `createdAt` when not given.",
        "type": "string",
        "enum": crate::db::list::OrderBy::VALUES,
        "default": "createdAt"
    }
);

named!(
    /// `order` of a list.
    SortOrder,
    {
        "description": "The direction of the order; `desc` when not given.",
        "type": "string",
        "enum": crate::rpc::list::ORDER_VALUES,
        "default": "desc"
    }
);

named!(
    /// `limit` of a list.
    ListLimit,
    {
        "description": format!("The most items per page of `opportunity.list`, 1–{}; {} when not given. A page of large opportunities ends earlier, at about 4 MiB (at least one item), with a `nextCursor`.", crate::rpc::list::MAX_LIMIT, crate::rpc::list::DEFAULT_LIMIT),
        "type": "integer",
        "minimum": 1,
        "maximum": crate::rpc::list::MAX_LIMIT,
        "default": crate::rpc::list::DEFAULT_LIMIT
    }
);

named!(
    /// `limit` of the change feed.
    ChangesLimit,
    {
        "description": format!("The most events in one answer of `opportunity.changes`, 1–{}; {} when not given. A page of events of large opportunities ends earlier, at 4 MiB of them (at least one event): only an empty page says the reader has caught up.", crate::rpc::changes::MAX_LIMIT, crate::rpc::changes::DEFAULT_LIMIT),
        "type": "integer",
        "minimum": 1,
        "maximum": crate::rpc::changes::MAX_LIMIT,
        "default": crate::rpc::changes::DEFAULT_LIMIT
    }
);

named!(
    /// The id of a subscription.
    SubscriptionId,
    {"description": "The id of a subscription, named in each of its notifications.", "type": ["string", "integer"]}
);

named!(
    /// The answer of `opportunity.unsubscribe`.
    Unsubscribed,
    {"description": "`true` when the subscription was ended, `false` when it was not one of this connection.", "type": "boolean"}
);

/// What is blank at the ends of a name besides ASCII white space, U+0085 and U+00A0: the
/// rest of Unicode `White_Space` and the `Default_Ignorable_Code_Point`s of the Basic
/// Multilingual Plane ([`crate::domain::opportunity::is_blank`]), as a regex class body.
const BLANK_BEYOND_LATIN1: &str = r"\u00AD\u034F\u061C\u115F\u1160\u1680\u17B4\u17B5\u180B-\u180F\u2000-\u200F\u2028-\u202F\u205F-\u206F\u3000\u3164\uFE00-\uFE0F\uFEFF\uFFA0\uFFF0-\uFFF8";

/// The pattern of a name (`title`, a solution family), as `crate::rpc::params::name` reads it:
/// blanks at the ends, something visible, no control character between.
pub fn name_pattern() -> String {
    let blank = format!(r"[\t\n\x0B\f\r \x85\xA0{BLANK_BEYOND_LATIN1}]");
    let visible = format!(r"[^\x00-\x20\x7F-\xA0{BLANK_BEYOND_LATIN1}]");
    format!(r"^{blank}*{visible}(?:[^\x00-\x1F\x7F-\x9F]*{visible})?{blank}*$")
}

/// The pattern of a long free text (`crate::rpc::params::text`): no control character but
/// tab, line feed and carriage return.
pub const TEXT_PATTERN: &str = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]*$";

/// The schema of a title as sent.
pub fn title(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_TITLE_CHARS,
        "pattern": name_pattern(),
    })
}

/// The schema of a long free text as sent, `null` allowed.
pub fn optional_text(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": ["string", "null"], "maxLength": MAX_TEXT_CHARS, "pattern": TEXT_PATTERN})
}

/// The id of an opportunity, as answered: a UUID v7, lowercase.
pub fn opportunity_id(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "format": "uuid",
        "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
    })
}

/// The most items of `solutionFamilies`, and the schema of one item, as stored and answered:
/// trimmed, 1–100 characters, no repeats.
pub fn stored_names(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": MAX_SOLUTION_FAMILIES,
        "uniqueItems": true,
        "items": {"type": "string", "minLength": 1, "maxLength": MAX_SOLUTION_FAMILY_CHARS},
    })
}

/// `estimatedValue` as answered: `null`, or a number 0–1e12 equal to the value sent. No
/// `multipleOf: 0.01` here (the params keep it, with their note): validators that check it
/// with binary floats refuse answers such as 0.07.
pub fn stored_money(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Equal to the input value: at most 2 decimal places.",
        "type": ["number", "null"],
        "minimum": 0,
        "maximum": crate::domain::opportunity::MAX_ESTIMATED_VALUE_CENTS / 100,
    })
}

/// `solutionFamilies` as sent: `null` or up to 50 names, each 1–100 characters.
pub fn sent_names(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": ["array", "null"],
        "maxItems": MAX_SOLUTION_FAMILIES,
        "uniqueItems": true,
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_SOLUTION_FAMILY_CHARS,
            "pattern": name_pattern(),
        },
    })
}

/// `idempotencyKey` in params: a key, or `null` for none.
pub fn optional_idempotency_key(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = IdempotencyKey::json_schema(generator);
    schema.remove("description");
    schema.insert("type".into(), serde_json::json!(["string", "null"]));
    schema
}

/// The rules across fields of a create (`crate::domain::opportunity::check_across_fields`),
/// where an absent `stage` is "lead": `probability` 0 when lost and 100 when won, and
/// `lostReasonCategory` only when lost.
pub fn rules_across_fields(schema: &mut Schema) {
    let rules = serde_json::json!({
        "if": {"required": ["stage"], "properties": {"stage": {"const": "lost"}}},
        "then": {"properties": {"probability": {"enum": [0, null]}}},
        "else": {
            "properties": {"lostReasonCategory": {"type": "null"}},
            "if": {"required": ["stage"], "properties": {"stage": {"const": "won"}}},
            "then": {"properties": {"probability": {"enum": [100, null]}}},
        },
    });
    if let serde_json::Value::Object(rules) = rules {
        for (keyword, value) in rules {
            schema.insert(keyword, value);
        }
    }
}

/// The example of a create's params (README's first call).
pub fn create_example() -> serde_json::Value {
    serde_json::json!({
        "customerId": "550e8400-e29b-41d4-a716-446655440000",
        "title": "Chiller retrofit, Building C",
        "pipelineType": "retrofit",
        "estimatedValue": 125000.5,
        "expectedCloseDate": "2027-03-31T19:00:00+02:00",
    })
}

/// `expectedVersion` (`crate::rpc::lifecycle`): a version, 1 or more, that a 64-bit integer
/// holds.
pub fn expected_version(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "integer", "format": "int64", "minimum": 1, "maximum": i64::MAX})
}

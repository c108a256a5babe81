//! `opportunity.list` (CONTRACT.md §8): its params, and the opaque cursor of its keyset pages.
//!
//! A cursor is `base64url(payload).base64url(HMAC-SHA256(payload))`, keyed by a key derived from
//! `AUTH_JWT_SECRET`, so every process of a deployment accepts the cursors of the others and
//! nobody can forge or alter one. The payload names the query it belongs to (a hash of the
//! workspace, filters and order; not `limit`) and the last row of the page it ends.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::AppState;
use super::caller::{self, Access};
use super::opportunity::{db_failure, instant};
use super::params::{self, FieldReader};
use crate::db::list::{Archived, ListQuery, OrderBy, SortValue};
use crate::domain::opportunity::{
    MAX_TITLE_CHARS, Money, Opportunity, PipelineType, Priority, Source, Stage, format_instant,
};
use crate::error::{ApiError, ValidationFailure};
use crate::http::CallContext;

/// The dotted method name.
pub const LIST: &str = "opportunity.list";

/// The values of `include` (`"own"` is the default), of `archived` and of `order`.
pub const INCLUDE_VALUES: &[&str] = &["own", "visible"];
pub const ARCHIVED_VALUES: &[&str] = &["exclude", "only", "include"];
pub const ORDER_VALUES: &[&str] = &["desc", "asc"];

/// The default and largest page.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 200;
/// Longer cursors are not even decoded.
pub const MAX_CURSOR_CHARS: usize = 512;

type HmacSha256 = Hmac<Sha256>;

/// The key cursors are signed with, derived from the token secret.
#[derive(Clone)]
pub struct CursorKey([u8; 32]);

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey(…)")
    }
}

impl CursorKey {
    /// A key for cursors, distinct from the secret itself.
    pub fn derive(secret: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"opportunity-service list cursor v1\0");
        hasher.update(secret);
        Self(hasher.finalize().into())
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes a key of any length")
    }
}

/// What a cursor carries.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Payload {
    /// The query's fingerprint.
    q: String,
    /// The ordering value of the last row: an instant, cents, or null.
    #[serde(default)]
    t: Option<String>,
    #[serde(default)]
    m: Option<i64>,
    /// The id of the last row.
    i: Uuid,
    /// The feed's head at the first page.
    a: i64,
}

/// The fingerprint of everything a cursor is bound to: workspace, include, filters, order.
fn fingerprint(q: &ListQuery) -> String {
    let text = format!(
        "{}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}",
        q.workspace,
        q.visible,
        q.stages,
        q.pipeline_types,
        q.priorities,
        q.sources,
        q.customer_id,
        q.owner_user_id,
        q.site_id,
        q.is_closed,
        q.archived,
        q.expected_close_from,
        q.expected_close_to,
        q.updated_since,
        q.title_contains,
        q.order(),
        q.descending,
    );
    let digest = Sha256::digest(text.as_bytes());
    format!("{:x}", digest)[..32].to_string()
}

fn encode_cursor(key: &CursorKey, q: &ListQuery, last: &Opportunity) -> String {
    let (t, m) = match q.order().value_of(last) {
        SortValue::Null => (None, None),
        SortValue::Instant(at) => (Some(format_instant(&at)), None),
        SortValue::Money(money) => (None, Some(money.cents())),
    };
    let payload = serde_json::to_vec(&Payload { q: fingerprint(q), t, m, i: last.id, a: q.as_of.unwrap_or(0) })
        .expect("a payload serializes");
    let mut mac = key.mac();
    mac.update(&payload);
    let tag = mac.finalize().into_bytes();
    format!("{}.{}", URL_SAFE_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode(tag))
}

const NOT_OURS: &str = "is not a cursor this service issued (pass nextCursor back unchanged)";

/// Checks a cursor's signature and reads what it carries.
fn verify_cursor(key: &CursorKey, cursor: &str) -> Result<Payload, &'static str> {
    if cursor.len() > MAX_CURSOR_CHARS {
        return Err(NOT_OURS);
    }
    let (payload, tag) = cursor.split_once('.').ok_or(NOT_OURS)?;
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| NOT_OURS)?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| NOT_OURS)?;
    let mut mac = key.mac();
    mac.update(&payload);
    mac.verify_slice(&tag).map_err(|_| NOT_OURS)?;
    serde_json::from_slice(&payload).map_err(|_| NOT_OURS)
}

/// Reads a cursor of this query; the message says why it is refused.
fn decode_cursor(key: &CursorKey, q: &ListQuery, cursor: &str) -> Result<(SortValue, Uuid, i64), &'static str> {
    let payload = verify_cursor(key, cursor)?;
    if payload.q != fingerprint(q) {
        return Err("belongs to another query: use it with the same workspace, include, filters and order");
    }
    let value = match (q.order(), payload.t, payload.m) {
        (OrderBy::CreatedAt | OrderBy::UpdatedAt | OrderBy::ExpectedCloseDate, Some(t), None) => {
            SortValue::Instant(DateTime::parse_from_rfc3339(&t).map_err(|_| NOT_OURS)?.with_timezone(&Utc))
        }
        (OrderBy::EstimatedValue, None, Some(m)) => SortValue::Money(Money::from_cents(m)),
        (OrderBy::ExpectedCloseDate | OrderBy::EstimatedValue, None, None) => SortValue::Null,
        _ => return Err(NOT_OURS),
    };
    Ok((value, payload.i, payload.a))
}

/// An array of enum values; each item reported at `field.N`.
fn enum_array<T: Copy>(
    reader: &mut FieldReader<'_>,
    field: &str,
    values: &'static [&'static str],
    parse: fn(&str) -> Option<T>,
    as_str: fn(T) -> &'static str,
) -> Option<Vec<&'static str>> {
    let raw = reader.optional(field, Ok)?;
    let items: Vec<&RawValue> = match serde_json::from_str(raw.get()) {
        Ok(items) => items,
        Err(_) => {
            reader.failure.field(field, format!("must be an array of: {}", values.join(", ")));
            return None;
        }
    };
    if items.len() > params::max_filter_items(values) {
        reader.failure.field(field, format!("must have at most {} items", params::max_filter_items(values)));
        return None;
    }
    let one = params::one_of(values, parse);
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (index, item) in items.into_iter().enumerate() {
        match one(item) {
            Ok(v) => {
                if !out.contains(&as_str(v)) {
                    out.push(as_str(v));
                }
            }
            Err(message) => {
                reader.failure.field(format!("{field}.{index}"), message);
                ok = false;
            }
        }
    }
    // One order for the fingerprint: `["won","lead"]` and `["lead","won"]` are one query.
    out.sort_unstable();
    ok.then_some(out)
}

fn keyword<T>(
    reader: &mut FieldReader<'_>,
    field: &str,
    values: &'static [&'static str],
    parse: fn(&str) -> Option<T>,
) -> Option<T> {
    reader.optional(field, params::one_of(values, parse))
}

/// Reads every param; problems go to the reader's failure. `limit` and `cursor` come back apart.
fn read_list(reader: &mut FieldReader<'_>) -> (ListQuery, Option<String>) {
    reader.refuse_unknown(&super::wire::LIST_FIELDS);
    let include = keyword(reader, "include", INCLUDE_VALUES, |s| match s {
        "own" => Some(false),
        "visible" => Some(true),
        _ => None,
    });
    let archived = keyword(reader, "archived", ARCHIVED_VALUES, |s| match s {
        "exclude" => Some(Archived::Exclude),
        "only" => Some(Archived::Only),
        "include" => Some(Archived::Include),
        _ => None,
    });
    let order = keyword(reader, "order", ORDER_VALUES, |s| match s {
        "desc" => Some(true),
        "asc" => Some(false),
        _ => None,
    });
    let title_contains = reader.optional("titleContains", params::string).and_then(|t| {
        let chars = t.chars().count();
        if (1..=MAX_TITLE_CHARS).contains(&chars) {
            Some(crate::db::list::fold_case(&t))
        } else {
            reader.failure.field("titleContains", format!("must be between 1 and {MAX_TITLE_CHARS} characters"));
            None
        }
    });
    let limit = reader.optional("limit", params::integer).and_then(|l| {
        if (1..=MAX_LIMIT as i64).contains(&l) {
            Some(l as usize)
        } else {
            reader.failure.field("limit", format!("must be between 1 and {MAX_LIMIT}"));
            None
        }
    });
    let mut in_range = |field: &str| {
        let at = reader.optional(field, instant)?;
        match crate::domain::opportunity::validate_instant_range(&at) {
            Ok(()) => Some(at),
            Err(e) => {
                reader.failure.field(field, e.message.map(|m| m.to_string()).unwrap_or_default());
                None
            }
        }
    };
    let expected_close_from = in_range("expectedCloseFrom");
    let expected_close_to = in_range("expectedCloseTo");
    let updated_since = in_range("updatedSince");
    let query = ListQuery {
        workspace: Uuid::nil(),
        visible: include.unwrap_or(false),
        stages: enum_array(reader, "stage", Stage::VALUES, Stage::parse, Stage::as_str),
        pipeline_types: enum_array(
            reader,
            "pipelineType",
            PipelineType::VALUES,
            PipelineType::parse,
            PipelineType::as_str,
        ),
        priorities: enum_array(reader, "priority", Priority::VALUES, Priority::parse, Priority::as_str),
        sources: enum_array(reader, "source", Source::VALUES, Source::parse, Source::as_str),
        customer_id: reader.optional("customerId", params::uuid),
        owner_user_id: reader.optional("ownerUserId", params::uuid),
        site_id: reader.optional("siteId", params::uuid),
        is_closed: reader.optional("isClosed", params::boolean),
        archived: archived.unwrap_or_default(),
        expected_close_from,
        expected_close_to,
        updated_since,
        title_contains,
        order_by: keyword(reader, "orderBy", OrderBy::VALUES, OrderBy::parse),
        descending: order.unwrap_or(true),
        limit: limit.unwrap_or(DEFAULT_LIMIT),
        after: None,
        as_of: None,
    };
    let cursor = reader.optional("cursor", params::string);
    (query, cursor)
}

/// `opportunity.list`.
pub async fn list(
    state: &AppState,
    params: Option<&str>,
    context: Option<&CallContext>,
    request_id: Uuid,
) -> Result<Box<RawValue>, ApiError> {
    let principal = caller::principal(context, Access::Read)?;
    let mut reader = FieldReader::new(params);
    let (mut query, cursor) = read_list(&mut reader);
    let named = caller::named_workspace(&mut reader, context);
    let mut all = std::mem::take(&mut reader.failure);
    // A cursor that is not ours, or that belongs to another query, is reported with the other
    // problems, before the workspace grant (§4's order). The query it must match is the one
    // asked for: in the workspace named, else the token's only one; it is only known when no
    // field the cursor is bound to has a problem (`limit` is not one of them).
    let asked = named.or_else(|| principal.resolve_workspace(None, &mut ValidationFailure::default()).ok().flatten());
    let bound_fields_valid = all.field_errors.keys().all(|f| matches!(f.split('.').next(), Some("limit" | "cursor")));
    let mut position = None;
    if let Some(cursor) = &cursor {
        match verify_cursor(&state.cursor_key, cursor) {
            Err(message) => all.field("cursor", message),
            Ok(_) => {
                if let Some(workspace) = asked.filter(|_| bound_fields_valid) {
                    query.workspace = workspace;
                    match decode_cursor(&state.cursor_key, &query, cursor) {
                        Ok(decoded) => position = Some(decoded),
                        Err(message) => all.field("cursor", message),
                    }
                }
            }
        }
    }
    let workspace = caller::workspace(principal, named, all)?;
    query.workspace = workspace;
    if let Some(cursor) = &cursor {
        let (value, id, as_of) = match position {
            Some(decoded) => decoded,
            None => decode_cursor(&state.cursor_key, &query, cursor).map_err(|message| {
                let mut failure = ValidationFailure::default();
                failure.field("cursor", message);
                ApiError::InvalidParams(failure)
            })?,
        };
        query.after = Some((value, id));
        query.as_of = Some(as_of);
    }
    let q = query.clone();
    let (items, more, head) = state
        .db
        .run(move |conn| crate::db::list::list(conn, &q))
        .await
        .map_err(|e| db_failure(e, request_id, &state.metrics))?;
    // A page of large opportunities ends early (keyset pages may be shorter than `limit`).
    let (items, more) = within_page_bytes(items, more);
    // The first page fixes the head the following pages are read against.
    query.as_of = query.as_of.or(head);
    let next_cursor = match items.last() {
        Some(last) if more => Some(encode_cursor(&state.cursor_key, &query, last)),
        _ => None,
    };
    let page = super::wire::OpportunityPage { items: &items, next_cursor };
    Ok(super::wire::answer(&page))
}

/// The most JSON a page of `opportunity.list` holds, estimated from its text: a page of large
/// opportunities (each may hold about 50,000 characters of text) ends before its `limit`, with
/// a `nextCursor`, so that it stays within `MAX_RESPONSE_BYTES`.
pub const PAGE_BYTES: usize = 4 * 1024 * 1024;

/// An upper bound of the JSON of `o`: its fixed fields, and its text twice over (an escape takes
/// two bytes at most, control characters other than tab and line breaks being refused).
fn json_bound(o: &Opportunity) -> usize {
    let texts = [
        &o.scope_summary,
        &o.competitor_notes,
        &o.win_loss_reason,
        &o.next_step_description,
        &o.technical_requirements,
    ];
    let text = o.title.len()
        + texts.iter().map(|t| t.as_ref().map_or(0, String::len)).sum::<usize>()
        + o.solution_families.iter().map(|f| f.len() + 3).sum::<usize>();
    1024 + 2 * text
}

/// The first items of a page that fit in [`PAGE_BYTES`] (at least one), and whether more follow.
fn within_page_bytes(mut items: Vec<Opportunity>, more: bool) -> (Vec<Opportunity>, bool) {
    let mut total = 0usize;
    let fit = items
        .iter()
        .take_while(|o| {
            total = total.saturating_add(json_bound(o));
            total <= PAGE_BYTES
        })
        .count()
        .max(1);
    if fit < items.len() {
        items.truncate(fit);
        return (items, true);
    }
    (items, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opportunity() -> Opportunity {
        let input = crate::domain::opportunity::CreateOpportunity {
            customer_id: Some(Uuid::now_v7()),
            title: Some("t".into()),
            pipeline_type: Some(PipelineType::Retrofit),
            ..Default::default()
        };
        Opportunity::new(input, Uuid::nil(), Uuid::nil(), Utc::now()).unwrap()
    }

    #[test]
    fn cursors_round_trip_and_refuse_tampering_and_other_queries() {
        let key = CursorKey::derive(b"a secret of at least thirty-two bytes!!");
        let q = ListQuery { workspace: Uuid::now_v7(), limit: 10, descending: true, ..Default::default() };
        let last = opportunity();
        let cursor = encode_cursor(&key, &q, &last);
        assert_eq!(decode_cursor(&key, &q, &cursor), Ok((SortValue::Instant(last.created_at), last.id, 0)));
        // limit may change between pages
        let other_limit = ListQuery { limit: 200, ..q.clone() };
        assert!(decode_cursor(&key, &other_limit, &cursor).is_ok());
        // another order, filter or workspace is refused
        for other in [
            ListQuery { descending: false, ..q.clone() },
            ListQuery { stages: Some(vec!["lead"]), ..q.clone() },
            ListQuery { workspace: Uuid::now_v7(), ..q.clone() },
        ] {
            assert!(decode_cursor(&key, &other, &cursor).unwrap_err().contains("another query"));
        }
        // an altered byte, another key, garbage
        let mut altered = cursor.clone().into_bytes();
        altered[3] = if altered[3] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert!(decode_cursor(&key, &q, &altered).unwrap_err().contains("not a cursor"));
        let other_key = CursorKey::derive(b"another secret of thirty-two bytes!!!!!");
        assert!(decode_cursor(&other_key, &q, &cursor).is_err());
        for garbage in ["", ".", "abc", "abc.def", &"x".repeat(10_000)] {
            assert!(decode_cursor(&key, &q, garbage).is_err(), "{garbage}");
        }
    }
}

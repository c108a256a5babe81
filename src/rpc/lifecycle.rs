//! `opportunity.get`, `opportunity.update`, `opportunity.archive` and `opportunity.restore`
//! (CONTRACT.md §8): their params, read field by field so that every problem is reported at
//! once, and their handlers.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::AppState;
use super::caller::{self, Access};
use super::opportunity::{db_failure, instant, money};
use super::params::{self, FieldReader};
use super::wire::{GET_FIELDS, STATE_FIELDS, UPDATE_FIELDS};
use crate::auth::{Principal, SCOPE_GLOBAL};
use crate::db::events::{EventKind, NewEvent};
use crate::db::opportunity::{ChangeKey, Changed, Decision};
use crate::domain::opportunity::JsonDecimal;
use crate::domain::opportunity::{
    CreateOpportunity, LostReasonCategory, Opportunity, OpportunityPatch, PipelineType, Priority, Source, Stage,
    VisibilityMode, format_instant,
};
use crate::error::{ApiError, ValidationFailure};
use crate::http::CallContext;

/// The dotted method names.
pub const GET: &str = "opportunity.get";
pub const UPDATE: &str = "opportunity.update";
pub const ARCHIVE: &str = "opportunity.archive";
pub const RESTORE: &str = "opportunity.restore";

/// The one answer for an opportunity that does not exist and one the caller may not read, so
/// that nothing tells them apart.
fn not_found(id: Uuid) -> ApiError {
    ApiError::NotFound(format!("no opportunity {id} in reach of this workspace"))
}

/// Whether a call acting in `workspace` may read `o` (§8's table).
pub fn readable(o: &Opportunity, workspace: Uuid) -> bool {
    o.workspace_id == workspace || o.visibility_mode != VisibilityMode::WorkspaceLocal
}

/// Whether a call acting in `workspace` may change `o` (§8's table).
fn changeable(o: &Opportunity, workspace: Uuid, principal: &Principal) -> bool {
    o.workspace_id == workspace
        || (o.visibility_mode == VisibilityMode::Global && principal.scopes.contains(SCOPE_GLOBAL))
}

/// `expectedVersion`: an integer ≥ 1, and at most `i64::MAX` (a larger one cannot be held, so
/// it could not be named as sent).
fn version(raw: &RawValue) -> Result<i64, String> {
    let value = JsonDecimal::parse(raw.get()).filter(JsonDecimal::is_integer).ok_or("must be an integer")?;
    if value.negative || value.is_zero() {
        return Err("must be an integer of at least 1".into());
    }
    // As sent (a version no opportunity reaches is a `version_mismatch`, which names it).
    value.scaled_to_i64(0).ok_or_else(|| format!("must be an integer of at most {}", i64::MAX))
}

/// The id, the idempotency key (params or header) and the named workspace, common to every
/// method that names one opportunity.
struct Target {
    id: Option<Uuid>,
    expected_version: Option<i64>,
    idempotency_key: Option<String>,
    workspace: Option<Uuid>,
}

fn read_target(reader: &mut FieldReader<'_>, context: Option<&CallContext>, with_version: bool) -> Target {
    let id = reader.required("id", params::uuid);
    let expected_version = if with_version { reader.required("expectedVersion", version) } else { None };
    let mut idempotency_key = if with_version { reader.optional("idempotencyKey", params::string) } else { None };
    if with_version {
        // One header key cannot be the key of every call of a batch (as for a create).
        let header = context.and_then(|c| c.idempotency_key.as_deref().filter(|_| !c.in_batch));
        if context.is_some_and(|c| c.in_batch && c.idempotency_key.is_some()) {
            reader.failure.field("idempotencyKey", super::opportunity::BATCH_HEADER_KEY);
        }
        caller::repeated_header(context, "idempotencyKey", &mut reader.failure);
        match (header, &idempotency_key) {
            (Some(header), Some(field)) if header != field => reader
                .failure
                .field("idempotencyKey", "differs from the Idempotency-Key header; send one or make them equal"),
            (Some(header), None) if !reader.failure.has_field("idempotencyKey") => {
                idempotency_key = Some(header.to_string())
            }
            _ => {}
        }
        if let Some(key) = &idempotency_key
            && !reader.failure.has_field("idempotencyKey")
        {
            let check = CreateOpportunity { idempotency_key: Some(key.clone()), ..Default::default() };
            check.check_fields(&mut reader.failure);
        }
    }
    let workspace = caller::named_workspace(reader, context);
    Target { id, expected_version, idempotency_key, workspace }
}

/// `opportunity.get`.
pub async fn get(
    state: &AppState,
    params: Option<&str>,
    context: Option<&CallContext>,
    request_id: Uuid,
) -> Result<Box<RawValue>, ApiError> {
    let principal = caller::principal(context, Access::Read)?;
    let mut reader = FieldReader::new(params);
    reader.refuse_unknown(&GET_FIELDS);
    let target = read_target(&mut reader, context, false);
    let workspace = caller::workspace(principal, target.workspace, reader.failure)?;
    let id = target.id.expect("an id once the params are valid");
    let stored = state.db.get_opportunity(id).await.map_err(|e| db_failure(e, request_id, &state.metrics))?;
    match stored {
        Some(o) if readable(&o, workspace) => Ok(super::wire::answer(&o)),
        _ => Err(not_found(id)),
    }
}

/// The fields of an update, read with their types: the change, and a view of the values it
/// sets to run the single-field rules of §5 on (the same rules as a create's).
fn read_patch(reader: &mut FieldReader<'_>) -> (OpportunityPatch, CreateOpportunity) {
    let solution_families = match reader.patch("solutionFamilies", Ok) {
        Some(Some(raw)) => Some(params::solution_families(raw, &mut reader.failure).unwrap_or_default()),
        Some(None) => Some(Vec::new()),
        None => None,
    };
    let probability = reader.patch("probability", params::integer);
    let patch = OpportunityPatch {
        customer_id: reader.defaulted("customerId", params::uuid),
        primary_contact_id: reader.patch("primaryContactId", params::uuid),
        site_id: reader.patch("siteId", params::uuid),
        title: reader.defaulted("title", params::name),
        stage: reader.defaulted("stage", params::one_of(Stage::VALUES, Stage::parse)),
        pipeline_type: reader.defaulted("pipelineType", params::one_of(PipelineType::VALUES, PipelineType::parse)),
        source: reader.patch("source", params::one_of(Source::VALUES, Source::parse)),
        estimated_value: reader.patch("estimatedValue", money),
        expected_close_date: reader.patch("expectedCloseDate", instant),
        probability: probability.map(|p| p.map(|v| v.clamp(i16::MIN.into(), i16::MAX.into()) as i16)),
        solution_families,
        scope_summary: reader.patch("scopeSummary", params::text),
        competitor_notes: reader.patch("competitorNotes", params::text),
        win_loss_reason: reader.patch("winLossReason", params::text),
        next_step_description: reader.patch("nextStepDescription", params::text),
        next_step_date: reader.patch("nextStepDate", instant),
        bid_due_date: reader.patch("bidDueDate", instant),
        budget_confirmed: reader.defaulted("budgetConfirmed", params::boolean),
        priority: reader.patch("priority", params::one_of(Priority::VALUES, Priority::parse)),
        lost_reason_category: reader
            .patch("lostReasonCategory", params::one_of(LostReasonCategory::VALUES, LostReasonCategory::parse)),
        technical_requirements: reader.patch("technicalRequirements", params::text),
        owner_user_id: None,
        visibility_mode: reader
            .defaulted("visibilityMode", params::one_of(VisibilityMode::VALUES, VisibilityMode::parse)),
    };
    let set = |v: &Option<Option<String>>| v.clone().flatten();
    let values = CreateOpportunity {
        title: patch.title.clone(),
        expected_close_date: patch.expected_close_date.flatten(),
        probability: probability.flatten(),
        solution_families: patch.solution_families.clone(),
        scope_summary: set(&patch.scope_summary),
        competitor_notes: set(&patch.competitor_notes),
        win_loss_reason: set(&patch.win_loss_reason),
        next_step_description: set(&patch.next_step_description),
        next_step_date: patch.next_step_date.flatten(),
        bid_due_date: patch.bid_due_date.flatten(),
        technical_requirements: set(&patch.technical_requirements),
        ..Default::default()
    };
    (patch, values)
}

/// A fingerprint of a change request, to tell a replay from a reuse of its key: the method, the
/// opportunity, the expected version and each field the change names with the value it sets
/// (`null` for a clear), as JSON with sorted keys. Spelling and order of the params do not
/// matter, and a field the method gains later changes no fingerprint stored before.
fn change_hash(method: &str, id: Uuid, expected: i64, patch: Option<&OpportunityPatch>) -> String {
    let request = serde_json::json!({
        "method": method,
        "id": id,
        "expectedVersion": expected,
        "set": patch.map(patch_fields).unwrap_or_default(),
    });
    format!("{:x}", Sha256::digest(request.to_string().as_bytes()))
}

/// What versions before 2026-12-05 stored as a change's fingerprint (the change's `Debug` text,
/// which a new field of [`OpportunityPatch`] would change): a key stored by one of them still
/// replays after the upgrade. Keys live `IDEMPOTENCY_KEY_TTL` (24 hours); this can go in the
/// next release.
fn legacy_change_hash(method: &str, id: Uuid, expected: i64, patch: Option<&OpportunityPatch>) -> String {
    let text = format!("{method}|{id}|{expected}|{patch:?}");
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// The fields a change names, by wire name, with the values it sets.
fn patch_fields(p: &OpportunityPatch) -> serde_json::Map<String, serde_json::Value> {
    fn value<T: serde::Serialize>(v: &Option<T>) -> Option<serde_json::Value> {
        v.as_ref().map(|v| serde_json::to_value(v).expect("a field serializes"))
    }
    fn at(v: &Option<Option<DateTime<Utc>>>) -> Option<serde_json::Value> {
        v.map(|v| v.map(|at| format_instant(&at)).into())
    }
    let fields = [
        ("customerId", value(&p.customer_id)),
        ("primaryContactId", value(&p.primary_contact_id)),
        ("siteId", value(&p.site_id)),
        ("title", value(&p.title)),
        ("stage", value(&p.stage)),
        ("pipelineType", value(&p.pipeline_type)),
        ("source", value(&p.source)),
        ("estimatedValue", value(&p.estimated_value)),
        ("expectedCloseDate", at(&p.expected_close_date)),
        ("probability", value(&p.probability)),
        ("solutionFamilies", value(&p.solution_families)),
        ("scopeSummary", value(&p.scope_summary)),
        ("competitorNotes", value(&p.competitor_notes)),
        ("winLossReason", value(&p.win_loss_reason)),
        ("nextStepDescription", value(&p.next_step_description)),
        ("nextStepDate", at(&p.next_step_date)),
        ("bidDueDate", at(&p.bid_due_date)),
        ("budgetConfirmed", value(&p.budget_confirmed)),
        ("priority", value(&p.priority)),
        ("lostReasonCategory", value(&p.lost_reason_category)),
        ("technicalRequirements", value(&p.technical_requirements)),
        ("ownerUserId", value(&p.owner_user_id)),
        ("visibilityMode", value(&p.visibility_mode)),
    ];
    fields.into_iter().filter_map(|(name, v)| Some((name.to_string(), v?))).collect()
}

/// The checks a change runs under the row lock, in the order of §4 after the params: not
/// readable (NOT_FOUND), not changeable (FORBIDDEN), `version_mismatch`, then the method's own.
fn check_change(
    current: Option<Opportunity>,
    id: Uuid,
    workspace: Uuid,
    principal: &Principal,
    expected: i64,
    becomes_global: bool,
) -> Result<Opportunity, ApiError> {
    let current = current.filter(|o| readable(o, workspace)).ok_or_else(|| not_found(id))?;
    if !changeable(&current, workspace, principal) {
        return Err(ApiError::Forbidden(format!(
            "opportunity {id} belongs to another workspace and may only be read from this one"
        )));
    }
    if becomes_global && current.visibility_mode != VisibilityMode::Global {
        principal.require_scope(SCOPE_GLOBAL)?;
    }
    if i64::from(current.version) != expected {
        return Err(ApiError::Conflict {
            message: format!(
                "expectedVersion is {expected} but the opportunity is at version {}; read it again",
                current.version
            ),
            reason: Some("version_mismatch"),
            retryable: false,
            current_version: Some(current.version),
        });
    }
    Ok(current)
}

fn archived_conflict(id: Uuid) -> ApiError {
    ApiError::Conflict {
        message: format!("opportunity {id} is archived; restore it before changing it"),
        reason: Some("archived"),
        retryable: false,
        current_version: None,
    }
}

/// The time of a change: now, never before the previous `updatedAt`.
fn change_time(current: &Opportunity) -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6).max(current.updated_at)
}

/// What a change method asks once its params are read.
enum Change {
    Update(Box<OpportunityPatch>),
    Archive,
    Restore,
}

/// Runs a change: checks, decides and writes under the row lock, replaying an idempotency key.
async fn run_change(
    state: &AppState,
    method: &'static str,
    principal: &Principal,
    workspace: Uuid,
    target: Target,
    change: Change,
    request_id: Uuid,
) -> Result<Box<RawValue>, ApiError> {
    let id = target.id.expect("an id once the params are valid");
    let expected = target.expected_version.expect("a version once the params are valid");
    let patch = match &change {
        Change::Update(p) => Some(&**p),
        _ => None,
    };
    let key = target.idempotency_key.map(|key| ChangeKey {
        workspace_id: workspace,
        key,
        request_hash: change_hash(method, id, expected, patch),
        legacy_hash: Some(legacy_change_hash(method, id, expected, patch)),
    });
    let principal = principal.clone();
    let actor = principal.user_id;
    let deadline = Instant::now() + state.db.timeout();
    let write = move |current: &Opportunity, next: Opportunity, kind: EventKind| {
        let json = serde_json::to_string(&next).expect("an opportunity serializes");
        let event = NewEvent::new(kind, Some(current), &next, actor, json);
        Decision::Write(next, Box::new(event))
    };
    let decide = move |current: Option<Opportunity>| -> Decision<ApiError> {
        let becomes_global = matches!(&change, Change::Update(p) if p.visibility_mode == Some(VisibilityMode::Global));
        let current = match check_change(current, id, workspace, &principal, expected, becomes_global) {
            Ok(current) => current,
            Err(e) => return Decision::Refuse(e),
        };
        match &change {
            Change::Update(patch) => {
                if current.archived_at.is_some() {
                    return Decision::Refuse(archived_conflict(id));
                }
                let mut next = patch.apply(&current);
                let mut failure = ValidationFailure::default();
                OpportunityPatch::check_result(&next, &mut failure);
                if !failure.is_empty() {
                    return Decision::Refuse(ApiError::InvalidParams(failure));
                }
                if next == current {
                    return Decision::Unchanged(current);
                }
                next.version = current.version + 1;
                next.updated_at = change_time(&current);
                write(&current, next, EventKind::Updated)
            }
            Change::Archive if current.archived_at.is_some() => Decision::Unchanged(current),
            Change::Restore if current.archived_at.is_none() => Decision::Unchanged(current),
            Change::Archive | Change::Restore => {
                let mut next = current.clone();
                let now = change_time(&current);
                next.archived_at = matches!(change, Change::Archive).then_some(now);
                next.version = current.version + 1;
                next.updated_at = now;
                let kind = if matches!(change, Change::Archive) { EventKind::Archived } else { EventKind::Restored };
                write(&current, next, kind)
            }
        }
    };
    let changed = state
        .db
        .change_opportunity(id, key, deadline, decide)
        .await
        .map_err(|e| db_failure(e, request_id, &state.metrics))?;
    match changed {
        Changed::Done(answer) => {
            state.db.wake_feed();
            Ok(RawValue::from_string(answer).expect("serde_json output is JSON"))
        }
        Changed::Replayed(stored) => {
            tracing::info!("idempotency key replayed");
            RawValue::from_string(stored).map_err(|_| ApiError::Internal { request_id })
        }
        Changed::KeyReused => Err(ApiError::Conflict {
            message: "the idempotency key was used before with other params".into(),
            reason: Some("idempotency_key_reused"),
            retryable: false,
            current_version: None,
        }),
        Changed::Refused(e) => Err(e),
    }
}

/// `opportunity.update`.
pub async fn update(
    state: &AppState,
    params: Option<&str>,
    context: Option<&CallContext>,
    request_id: Uuid,
) -> Result<Box<RawValue>, ApiError> {
    let principal = caller::principal(context, Access::Write)?;
    let mut reader = FieldReader::new(params);
    reader.refuse_unknown(&UPDATE_FIELDS);
    let target = read_target(&mut reader, context, true);
    let owner = reader.patch("ownerUserId", params::uuid);
    let (mut patch, values) = read_patch(&mut reader);
    patch.owner_user_id = owner.map(|o| o.unwrap_or(principal.user_id));
    let mut failure = std::mem::take(&mut reader.failure);
    values.check_fields(&mut failure);
    if let Some(stage) = patch.stage {
        // The rules across fields that the params alone break, whatever is stored, are
        // reported with the other problems of the params; the rest is checked on the
        // opportunity after the change.
        let lost_reason = patch.lost_reason_category.flatten();
        crate::domain::opportunity::check_across_fields(stage, values.probability, lost_reason, &mut failure);
    }
    // The fields of an archive (id, expectedVersion, workspace, key) change nothing.
    let changes_something = |n: &str| !STATE_FIELDS.iter().any(|f| f == n) && UPDATE_FIELDS.iter().any(|f| f == n);
    if reader.is_object() && !reader.names().any(changes_something) {
        failure.form("nothing to change: name at least one field to change besides id and expectedVersion");
    }
    let workspace = caller::workspace(principal, target.workspace, failure)?;
    run_change(state, UPDATE, principal, workspace, target, Change::Update(Box::new(patch)), request_id).await
}

/// `opportunity.archive` and `opportunity.restore`.
pub async fn set_archived(
    state: &AppState,
    archive: bool,
    params: Option<&str>,
    context: Option<&CallContext>,
    request_id: Uuid,
) -> Result<Box<RawValue>, ApiError> {
    let principal = caller::principal(context, Access::Write)?;
    let mut reader = FieldReader::new(params);
    reader.refuse_unknown(&STATE_FIELDS);
    let target = read_target(&mut reader, context, true);
    let workspace = caller::workspace(principal, target.workspace, reader.failure)?;
    let (method, change) = if archive { (ARCHIVE, Change::Archive) } else { (RESTORE, Change::Restore) };
    run_change(state, method, principal, workspace, target, change, request_id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch() -> OpportunityPatch {
        OpportunityPatch {
            title: Some("Chiller plant, phase 2".into()),
            source: Some(None),
            expected_close_date: Some(Some(DateTime::parse_from_rfc3339("2027-03-31T00:00:00Z").unwrap().to_utc())),
            probability: Some(Some(60)),
            ..Default::default()
        }
    }

    /// Keys are stored with these fingerprints: a change to how they are made turns the retries
    /// that span an upgrade into conflicts.
    #[test]
    fn change_fingerprints_are_pinned() {
        let id = Uuid::from_u128(42);
        assert_eq!(
            change_hash(UPDATE, id, 3, Some(&patch())),
            "0e8c29339308ebfffb244d48cb0d5f986784887dbfcbfade7469bae0851e1b88",
        );
        assert_eq!(
            legacy_change_hash(UPDATE, id, 3, Some(&patch())),
            "0e78ce1056c4fbddf9f71cefe066dbb32eff81635d173b58e4d5f3511027fa2b",
        );
    }

    #[test]
    fn change_fingerprints_tell_requests_apart() {
        let id = Uuid::from_u128(42);
        let base = change_hash(UPDATE, id, 3, Some(&patch()));
        let mut cleared = patch();
        cleared.title = None;
        let mut other_value = patch();
        other_value.probability = Some(Some(61));
        let mut set_instead_of_cleared = patch();
        set_instead_of_cleared.source = Some(Some(Source::Referral));
        for (what, hash) in [
            ("a field left out", change_hash(UPDATE, id, 3, Some(&cleared))),
            ("another value", change_hash(UPDATE, id, 3, Some(&other_value))),
            ("a value instead of null", change_hash(UPDATE, id, 3, Some(&set_instead_of_cleared))),
            ("another expected version", change_hash(UPDATE, id, 4, Some(&patch()))),
            ("another opportunity", change_hash(UPDATE, Uuid::from_u128(43), 3, Some(&patch()))),
            ("another method", change_hash(ARCHIVE, id, 3, None)),
        ] {
            assert_ne!(hash, base, "{what}");
        }
        assert_ne!(change_hash(ARCHIVE, id, 3, None), change_hash(RESTORE, id, 3, None));
        assert_eq!(base, change_hash(UPDATE, id, 3, Some(&patch())), "the same request, the same fingerprint");
    }
}

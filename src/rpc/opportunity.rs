//! The `opportunity` namespace: wire parsing of `opportunity.create` and its registration.
//!
//! The method is registered by name rather than through `#[rpc]`: the contract takes the input
//! object itself as `params` (or a one-element array holding it), whereas the proc macro wraps
//! by-name params in an object keyed by argument name.

use chrono::Utc;
use jsonrpsee::{Extensions, RpcModule};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::params::{self, FieldReader};
use super::{AppState, RequestId};
use crate::auth::{SCOPE_GLOBAL, SCOPE_WRITE};
use crate::db::DbError;
use crate::db::opportunity::{CreateOutcome, IdempotencyRecord};
use crate::domain::opportunity::{
    CreateOpportunity, LostReasonCategory, Money, Opportunity, PipelineType, Priority, Source, Stage, VisibilityMode,
    format_instant, parse_instant,
};
use crate::error::{ApiError, ValidationFailure};
use crate::http::CallContext;
use crate::metrics::Metrics;

/// The dotted name of the create method.
pub const CREATE: &str = "opportunity.create";

/// Every field `opportunity.create` accepts (the seed's table plus `idempotencyKey`): those of
/// its wire type, [`CreateOpportunity`].
pub use super::wire::CREATE_FIELDS;

pub(super) fn instant(raw: &RawValue) -> Result<chrono::DateTime<Utc>, String> {
    let text = params::string(raw).map_err(|_| "must be a date-time string".to_string())?;
    parse_instant(&text).map_err(str::to_string)
}

pub(super) fn money(raw: &RawValue) -> Result<Money, String> {
    Money::parse_json_number(raw.get()).map_err(str::to_string)
}

/// The field error of a create in a batch that carries an `Idempotency-Key` header.
pub const BATCH_HEADER_KEY: &str =
    "the Idempotency-Key header cannot be used with a batch: send each call's own idempotencyKey in its params";

/// Reads every field with its type, recording every problem; rules come after.
pub fn read_create(reader: &mut FieldReader<'_>) -> CreateOpportunity {
    reader.refuse_unknown(&CREATE_FIELDS);
    let solution_families = match reader.optional("solutionFamilies", Ok) {
        Some(raw) => params::solution_families(raw, &mut reader.failure),
        None => None,
    };
    CreateOpportunity {
        customer_id: reader.required("customerId", params::uuid),
        primary_contact_id: reader.optional("primaryContactId", params::uuid),
        site_id: reader.optional("siteId", params::uuid),
        title: reader.required("title", params::name),
        stage: reader.defaulted("stage", params::one_of(Stage::VALUES, Stage::parse)),
        pipeline_type: reader.required("pipelineType", params::one_of(PipelineType::VALUES, PipelineType::parse)),
        source: reader.optional("source", params::one_of(Source::VALUES, Source::parse)),
        estimated_value: reader.optional("estimatedValue", money),
        expected_close_date: reader.optional("expectedCloseDate", instant),
        probability: reader.optional("probability", params::integer),
        solution_families,
        scope_summary: reader.optional("scopeSummary", params::text),
        competitor_notes: reader.optional("competitorNotes", params::text),
        win_loss_reason: reader.optional("winLossReason", params::text),
        next_step_description: reader.optional("nextStepDescription", params::text),
        next_step_date: reader.optional("nextStepDate", instant),
        bid_due_date: reader.optional("bidDueDate", instant),
        budget_confirmed: reader.defaulted("budgetConfirmed", params::boolean),
        priority: reader.optional("priority", params::one_of(Priority::VALUES, Priority::parse)),
        lost_reason_category: reader
            .optional("lostReasonCategory", params::one_of(LostReasonCategory::VALUES, LostReasonCategory::parse)),
        technical_requirements: reader.optional("technicalRequirements", params::text),
        owner_user_id: reader.optional("ownerUserId", params::uuid),
        workspace_id: reader.optional("workspaceId", params::uuid),
        visibility_mode: reader
            .defaulted("visibilityMode", params::one_of(VisibilityMode::VALUES, VisibilityMode::parse)),
        idempotency_key: reader.optional("idempotencyKey", params::string),
    }
}

/// Reads and checks the params of a create with the call's `Idempotency-Key` and
/// `X-Workspace-Id` headers: the input with every field typed, and every problem found. On
/// return `workspace_id` holds the workspace the call names (params first, else the header);
/// whether the caller may act there is for the caller's token to say.
pub fn parse_create(
    params: Option<&str>,
    idempotency_header: Option<&str>,
    workspace_header: Option<&str>,
) -> (CreateOpportunity, ValidationFailure) {
    let mut reader = FieldReader::new(params);
    let mut input = read_create(&mut reader);
    let mut failure: ValidationFailure = std::mem::take(&mut reader.failure);

    // The header key and the params key must agree; either alone is the key.
    match (idempotency_header, &input.idempotency_key) {
        (Some(header), Some(field)) if header != field => {
            failure.field("idempotencyKey", "differs from the Idempotency-Key header; send one or make them equal");
        }
        (Some(header), None) if !failure.has_field("idempotencyKey") => {
            input.idempotency_key = Some(header.to_string())
        }
        _ => {}
    }
    input.check(&mut failure);

    if input.workspace_id.is_none()
        && !failure.has_field("workspaceId")
        && reader.is_object()
        && let Some(header) = workspace_header
    {
        match params::parse_uuid(header.trim()) {
            Some(ws) => input.workspace_id = Some(ws),
            None => failure
                .field("workspaceId", format!("the X-Workspace-Id header must be a UUID ({})", params::UUID_FORM)),
        }
    }
    (input, failure)
}

/// A fingerprint of what a create asks for, to tell a replay from a reuse of its key: the
/// normalised request ([`CreateFingerprint`]: the params with their defaults applied, in the
/// workspace they resolved to), never the answer. So `stage` left out and `"stage": "lead"` are
/// the same request, and the answer may gain fields without turning replays into conflicts.
fn request_hash(opportunity: &Opportunity) -> String {
    // Through a `Value`, whose object keys are sorted: the form earlier versions hashed.
    let request = serde_json::to_value(CreateFingerprint::of(opportunity)).expect("a fingerprint serializes");
    format!("{:x}", Sha256::digest(request.to_string().as_bytes()))
}

/// What a create asks for, once normalised. Keys stored by earlier versions hold the SHA-256 of
/// exactly this JSON, keys sorted (these fields, names and forms; `version`, `isClosed` and
/// `isWon` follow from the request): change nothing here, or keys stored before an upgrade stop
/// replaying (`the_request_fingerprint_is_stable_across_versions` pins it).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateFingerprint<'a> {
    workspace_id: Uuid,
    customer_id: Uuid,
    primary_contact_id: Option<Uuid>,
    site_id: Option<Uuid>,
    title: &'a str,
    stage: Stage,
    pipeline_type: PipelineType,
    source: Option<Source>,
    estimated_value: Option<Money>,
    expected_close_date: Option<String>,
    probability: Option<i16>,
    solution_families: &'a [String],
    scope_summary: Option<&'a str>,
    competitor_notes: Option<&'a str>,
    win_loss_reason: Option<&'a str>,
    next_step_description: Option<&'a str>,
    next_step_date: Option<String>,
    bid_due_date: Option<String>,
    budget_confirmed: bool,
    priority: Option<Priority>,
    lost_reason_category: Option<LostReasonCategory>,
    technical_requirements: Option<&'a str>,
    owner_user_id: Uuid,
    visibility_mode: VisibilityMode,
    version: i32,
    is_closed: bool,
    is_won: bool,
}

impl<'a> CreateFingerprint<'a> {
    /// The request a new opportunity was made from.
    fn of(o: &'a Opportunity) -> Self {
        let instant = |at: &Option<chrono::DateTime<Utc>>| at.as_ref().map(format_instant);
        Self {
            workspace_id: o.workspace_id,
            customer_id: o.customer_id,
            primary_contact_id: o.primary_contact_id,
            site_id: o.site_id,
            title: &o.title,
            stage: o.stage,
            pipeline_type: o.pipeline_type,
            source: o.source,
            estimated_value: o.estimated_value,
            expected_close_date: instant(&o.expected_close_date),
            probability: o.probability,
            solution_families: &o.solution_families,
            scope_summary: o.scope_summary.as_deref(),
            competitor_notes: o.competitor_notes.as_deref(),
            win_loss_reason: o.win_loss_reason.as_deref(),
            next_step_description: o.next_step_description.as_deref(),
            next_step_date: instant(&o.next_step_date),
            bid_due_date: instant(&o.bid_due_date),
            budget_confirmed: o.budget_confirmed,
            priority: o.priority,
            lost_reason_category: o.lost_reason_category,
            technical_requirements: o.technical_requirements.as_deref(),
            owner_user_id: o.owner_user_id,
            visibility_mode: o.visibility_mode,
            version: 1,
            is_closed: o.stage.is_closed(),
            is_won: o.stage == Stage::Won,
        }
    }
}

/// `opportunity.create`: authenticate, read and check the params, resolve the workspace, and
/// store the opportunity durably before answering.
pub async fn create(
    state: &AppState,
    params: Option<&str>,
    context: Option<&CallContext>,
    request_id: Uuid,
) -> Result<Box<RawValue>, ApiError> {
    let context = context.ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer token".into()))?;
    let principal = context.principal()?;
    principal.require_scope(SCOPE_WRITE)?;

    // One header key cannot be the key of every call of a batch: the second call would replay
    // (or conflict with) the first. Each call of a batch sends its own key in its params.
    let header_key = context.idempotency_key.as_deref().filter(|_| !context.in_batch);
    let (mut input, mut failure) = parse_create(params, header_key, context.workspace_header.as_deref());
    if context.in_batch && context.idempotency_key.is_some() {
        failure.field("idempotencyKey", BATCH_HEADER_KEY);
    }
    for (field, header) in &context.repeated {
        failure.field(*field, format!("the {header} header was sent more than once; send it once"));
    }
    // Every problem of the params first, then the grant of the workspace (§4's order).
    let workspace = super::caller::workspace(principal, input.workspace_id.take(), failure)?;
    if input.visibility_mode == Some(VisibilityMode::Global) {
        principal.require_scope(SCOPE_GLOBAL)?;
    }

    let key = input.idempotency_key.clone();
    let opportunity = Opportunity::new(input, workspace, principal.user_id, Utc::now())
        .expect("required fields once the params are valid");
    let hash = key.as_ref().map(|_| request_hash(&opportunity));
    // The answer as it goes out; its text is also the event's and the key's.
    let answer = super::wire::answer(&opportunity);
    let record = key.clone().zip(hash).map(|(key, request_hash)| IdempotencyRecord {
        key,
        request_hash,
        response: answer.get().to_owned(),
    });
    let outcome = state
        .db
        .create_opportunity_answered(opportunity, answer.get().to_owned(), record)
        .await
        .map_err(|e| db_failure(e, request_id, &state.metrics))?;
    match outcome {
        CreateOutcome::Created => Ok(answer),
        CreateOutcome::Replayed(stored) => {
            tracing::info!("idempotency key replayed");
            RawValue::from_string(stored).map_err(|e| internal(request_id, &e.to_string()))
        }
        CreateOutcome::KeyReused => Err(ApiError::Conflict {
            message: format!("the idempotency key {:?} was used before with other params", key.unwrap_or_default()),
            reason: Some("idempotency_key_reused"),
            retryable: false,
            current_version: None,
        }),
    }
}

fn internal(request_id: Uuid, cause: &str) -> ApiError {
    tracing::error!(%request_id, cause, "internal error");
    ApiError::Internal { request_id }
}

/// Maps a database failure to the caller's error ([`ApiError::from_db`]), counted by kind.
pub(super) fn db_failure(e: DbError, request_id: Uuid, metrics: &Metrics) -> ApiError {
    metrics.observe_db_error(e.kind());
    ApiError::from_db(e, request_id)
}

/// The `opportunity` namespace.
pub fn module(state: AppState) -> anyhow::Result<RpcModule<AppState>> {
    let mut module = RpcModule::new(state);
    module.register_async_method(CREATE, |params, state, extensions: Extensions| async move {
        let request_id = extensions.get::<RequestId>().map_or_else(Uuid::now_v7, |r| r.0);
        create(&state, params.as_str(), extensions.get::<CallContext>(), request_id)
            .await
            .map_err(ApiError::into_error_object)
    })?;
    macro_rules! register {
        ($name:expr, |$state:ident, $params:ident, $context:ident, $request_id:ident| $call:expr) => {
            module.register_async_method($name, |params, state, extensions: Extensions| async move {
                let $request_id = extensions.get::<RequestId>().map_or_else(Uuid::now_v7, |r| r.0);
                let $state = &*state;
                let $params = params.as_str();
                let $context = extensions.get::<CallContext>();
                $call.await.map_err(ApiError::into_error_object)
            })?;
        };
    }
    use super::{lifecycle, list};
    register!(lifecycle::GET, |s, p, c, r| lifecycle::get(s, p, c, r));
    register!(list::LIST, |s, p, c, r| list::list(s, p, c, r));
    register!(lifecycle::UPDATE, |s, p, c, r| lifecycle::update(s, p, c, r));
    register!(lifecycle::ARCHIVE, |s, p, c, r| lifecycle::set_archived(s, true, p, c, r));
    register!(lifecycle::RESTORE, |s, p, c, r| lifecycle::set_archived(s, false, p, c, r));
    super::changes::register(&mut module)?;
    Ok(module)
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone};

    use super::*;

    /// A create with every field set, made at `now` by `caller` (so with its own id and times).
    fn full_create(caller: Uuid, now: DateTime<Utc>) -> Opportunity {
        let at = |s: &str| Some(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc));
        let uuid = |n: u128| Uuid::from_u128(n);
        let input = CreateOpportunity {
            customer_id: Some(uuid(1)),
            primary_contact_id: Some(uuid(2)),
            site_id: Some(uuid(3)),
            title: Some("Chiller plant controls, Building C".into()),
            stage: Some(Stage::Proposal),
            pipeline_type: Some(PipelineType::Retrofit),
            source: Some(Source::Referral),
            estimated_value: Some(Money::from_cents(12_345_678)),
            expected_close_date: at("2027-03-31T00:00:00Z"),
            probability: Some(40),
            solution_families: Some(vec!["hvac_controls".into(), "fire_life_safety".into()]),
            scope_summary: Some("scope".into()),
            competitor_notes: Some("competitors".into()),
            win_loss_reason: Some("reason".into()),
            next_step_description: Some("site walk".into()),
            next_step_date: at("2027-01-15T09:30:00.250Z"),
            bid_due_date: at("2027-02-01T17:00:00+02:00"),
            budget_confirmed: Some(true),
            priority: Some(Priority::High),
            lost_reason_category: Some(LostReasonCategory::Timing),
            technical_requirements: Some("BACnet/IP".into()),
            owner_user_id: Some(uuid(4)),
            workspace_id: None,
            visibility_mode: Some(VisibilityMode::Shared),
            ..Default::default()
        };
        Opportunity::new(input, uuid(5), caller, now).unwrap()
    }

    /// Keys stored by earlier versions hold this hash: a create with the same params must still
    /// replay after an upgrade, whatever fields the answer gained since (CONTRACT §5 added
    /// `archivedAt`).
    #[test]
    fn the_request_fingerprint_is_stable_across_versions() {
        let first = full_create(Uuid::from_u128(6), Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).unwrap());
        let later = full_create(Uuid::from_u128(7), Utc::now());
        assert_eq!(request_hash(&first), request_hash(&later), "id, caller and times are not part of it");
        assert_eq!(request_hash(&first), "48d298cafd7bf99c2d420ef3831c994b16f98f4548f3a900fad04d887c0a20b9");
        let mut other = first.clone();
        other.title.push('!');
        assert_ne!(request_hash(&other), request_hash(&first));
    }
}

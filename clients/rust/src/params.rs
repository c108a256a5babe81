//! The params of every method, with builders for the optional fields.

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use uuid::Uuid;

use crate::types::{Archived, Include, LostReasonCategory, Order, OrderBy, PipelineType, Priority, Source, Stage};
use crate::{Money, VisibilityMode};

/// A field of [`UpdateOpportunity`]: left as it is, cleared (`null`), or set.
///
/// `Untouched` fields are left out of the params; `Clear` is sent as `null`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Patch<T> {
    /// Not sent: the stored value stays.
    #[default]
    Untouched,
    /// Sent as `null`: the stored value is cleared (for `ownerUserId`: back to the caller).
    Clear,
    /// Sent as the value.
    Set(T),
}

impl<T> Patch<T> {
    /// Whether the field is left out of the params.
    pub fn is_untouched(&self) -> bool {
        matches!(self, Patch::Untouched)
    }
}

impl<T> From<Option<T>> for Patch<T> {
    /// `Some(v)` sets, `None` clears.
    fn from(value: Option<T>) -> Self {
        value.map_or(Patch::Clear, Patch::Set)
    }
}

impl<T: Serialize> Serialize for Patch<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Patch::Set(value) => value.serialize(s),
            // Untouched is skipped by its field's `skip_serializing_if`; never seen here.
            Patch::Clear | Patch::Untouched => s.serialize_none(),
        }
    }
}

/// Setters of `Option` fields: `name(value)` sets the field.
macro_rules! setters {
    ($($(#[doc = $doc:literal])* $field:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[doc = $doc])*
            #[must_use]
            pub fn $field(mut self, value: impl Into<$ty>) -> Self {
                self.$field = Some(value.into());
                self
            }
        )*
    };
}

/// Setters of `Option` fields of a number type: `name(value)` sets the field (literals infer).
macro_rules! exact_setters {
    ($($(#[doc = $doc:literal])* $field:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[doc = $doc])*
            #[must_use]
            pub fn $field(mut self, value: $ty) -> Self {
                self.$field = Some(value);
                self
            }
        )*
    };
}

/// Setters of list filters: `name(values)` sets the list.
macro_rules! list_setters {
    ($($(#[doc = $doc:literal])* $field:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[doc = $doc])*
            #[must_use]
            pub fn $field(mut self, values: impl IntoIterator<Item = $ty>) -> Self {
                self.$field = Some(values.into_iter().collect());
                self
            }
        )*
    };
}

/// Setters of [`Patch`] fields: `name(value)` sets, `clear_name()` clears.
macro_rules! patch_setters {
    ($($(#[doc = $doc:literal])* $field:ident, $clear:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[doc = $doc])*
            #[must_use]
            pub fn $field(mut self, value: impl Into<$ty>) -> Self {
                self.$field = Patch::Set(value.into());
                self
            }

            #[doc = concat!("Clears `", stringify!($field), "` (sends `null`).")]
            #[must_use]
            pub fn $clear(mut self) -> Self {
                self.$field = Patch::Clear;
                self
            }
        )*
    };
}

/// The params of `opportunity.create`: the three required fields, then builders.
///
/// ```
/// use opportunity_client::{CreateOpportunity, Money, PipelineType, Stage};
/// let params = CreateOpportunity::new(uuid::Uuid::nil(), "Chiller retrofit", PipelineType::Retrofit)
///     .stage(Stage::Proposal)
///     .estimated_value(Money::from_cents(12_500_050));
/// assert_eq!(serde_json::to_value(&params).unwrap()["estimatedValue"], serde_json::json!(125000.5));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateOpportunity {
    /// The customer (required).
    pub customer_id: Uuid,
    /// The title (required; trimmed, 1–200 characters).
    pub title: String,
    /// The kind of work (required).
    pub pipeline_type: PipelineType,
    /// `lead` when left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// Optional.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary_contact_id: Option<Uuid>,
    /// Optional.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site_id: Option<Uuid>,
    /// Optional.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Optional; 0–1e12, exact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_value: Option<Money>,
    /// Optional.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_close_date: Option<DateTime<Utc>>,
    /// Optional; 0–100 (100 with `won`, 0 with `lost`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<u8>,
    /// Optional; at most 50 distinct items.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub solution_families: Option<Vec<String>>,
    /// Optional text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope_summary: Option<String>,
    /// Optional text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub competitor_notes: Option<String>,
    /// Optional text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub win_loss_reason: Option<String>,
    /// Optional text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_step_description: Option<String>,
    /// Optional.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_step_date: Option<DateTime<Utc>>,
    /// Optional.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bid_due_date: Option<DateTime<Utc>>,
    /// `false` when left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_confirmed: Option<bool>,
    /// Optional.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Optional; only with stage `lost`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_reason_category: Option<LostReasonCategory>,
    /// Optional text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub technical_requirements: Option<String>,
    /// The caller when left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_user_id: Option<Uuid>,
    /// The workspace W (see the API reference, "Workspace resolution").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<Uuid>,
    /// `workspace_local` when left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visibility_mode: Option<VisibilityMode>,
    /// The idempotency key; the client makes a UUID v4 when it is left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl CreateOpportunity {
    /// The params with the required fields; every other field left out.
    pub fn new(customer_id: Uuid, title: impl Into<String>, pipeline_type: PipelineType) -> Self {
        Self {
            customer_id,
            title: title.into(),
            pipeline_type,
            stage: None,
            primary_contact_id: None,
            site_id: None,
            source: None,
            estimated_value: None,
            expected_close_date: None,
            probability: None,
            solution_families: None,
            scope_summary: None,
            competitor_notes: None,
            win_loss_reason: None,
            next_step_description: None,
            next_step_date: None,
            bid_due_date: None,
            budget_confirmed: None,
            priority: None,
            lost_reason_category: None,
            technical_requirements: None,
            owner_user_id: None,
            workspace_id: None,
            visibility_mode: None,
            idempotency_key: None,
        }
    }

    setters! {
        /// Sets `stage`.
        stage: Stage,
        /// Sets `primaryContactId`.
        primary_contact_id: Uuid,
        /// Sets `siteId`.
        site_id: Uuid,
        /// Sets `source`.
        source: Source,
        /// Sets `estimatedValue`.
        estimated_value: Money,
        /// Sets `expectedCloseDate`.
        expected_close_date: DateTime<Utc>,
        /// Sets `scopeSummary`.
        scope_summary: String,
        /// Sets `competitorNotes`.
        competitor_notes: String,
        /// Sets `winLossReason`.
        win_loss_reason: String,
        /// Sets `nextStepDescription`.
        next_step_description: String,
        /// Sets `nextStepDate`.
        next_step_date: DateTime<Utc>,
        /// Sets `bidDueDate`.
        bid_due_date: DateTime<Utc>,
        /// Sets `budgetConfirmed`.
        budget_confirmed: bool,
        /// Sets `priority`.
        priority: Priority,
        /// Sets `lostReasonCategory`.
        lost_reason_category: LostReasonCategory,
        /// Sets `technicalRequirements`.
        technical_requirements: String,
        /// Sets `ownerUserId`.
        owner_user_id: Uuid,
        /// Sets `workspaceId`.
        workspace_id: Uuid,
        /// Sets `visibilityMode`.
        visibility_mode: VisibilityMode,
        /// Sets the idempotency key (1–255 printable ASCII characters) instead of a generated one.
        idempotency_key: String,
    }

    exact_setters! {
        /// Sets `probability` (0–100).
        probability: u8,
    }

    /// Replaces the title given to [`CreateOpportunity::new`].
    #[must_use]
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// Sets `solutionFamilies`.
    #[must_use]
    pub fn solution_families<S: Into<String>>(mut self, values: impl IntoIterator<Item = S>) -> Self {
        self.solution_families = Some(values.into_iter().map(Into::into).collect());
        self
    }
}

/// The params of `opportunity.update`: `id`, `expectedVersion`, and the fields to change.
///
/// Fields that may be cleared are [`Patch`]es (absent / `null` / value); the others are `Option`s
/// (absent / value), since the service refuses `null` for them.
///
/// ```
/// use opportunity_client::{Stage, UpdateOpportunity};
/// let params = UpdateOpportunity::new(uuid::Uuid::nil(), 3).stage(Stage::Won).clear_priority();
/// let json = serde_json::to_value(&params).unwrap();
/// assert_eq!(json["stage"], "won");
/// assert!(json["priority"].is_null() && json.get("priority").is_some());
/// assert!(json.get("probability").is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateOpportunity {
    /// The opportunity.
    pub id: Uuid,
    /// The `version` the change is based on.
    pub expected_version: i32,
    /// The workspace W.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<Uuid>,
    /// The idempotency key; the client makes a UUID v4 when it is left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Set or untouched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<Uuid>,
    /// Set or untouched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Set or untouched (`won`/`lost` set `probability` unless it is named).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// Set or untouched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_type: Option<PipelineType>,
    /// Set or untouched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_confirmed: Option<bool>,
    /// Set or untouched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visibility_mode: Option<VisibilityMode>,
    /// Set, cleared or untouched.
    #[serde(skip_serializing_if = "Patch::is_untouched")]
    pub primary_contact_id: Patch<Uuid>,
    /// Set, cleared or untouched.
    #[serde(skip_serializing_if = "Patch::is_untouched")]
    pub site_id: Patch<Uuid>,
    /// Set, cleared or untouched.
    #[serde(skip_serializing_if = "Patch::is_untouched")]
    pub source: Patch<Source>,
    /// Set, cleared or untouched.
    #[serde(skip_serializing_if = "Patch::is_untouched")]
    pub estimated_value: Patch<Money>,
    /// Set, cleared or untouched.
    #[serde(skip_serializing_if = "Patch::is_untouched")]
    pub expected_close_date: Patch<DateTime<Utc>>,
    /// Set, cleared or untouched.
    #[serde(skip_serializing_if = "Patch::is_untouched")]
    pub probability: Patch<u8>,
    /// Set, cleared (to `[]`) or untouched.
    #[serde(skip_serializing_if = "Patch::is_untouched")]
    pub solution_families: Patch<Vec<String>>,
    /// Set, cleared or untouched.
    #[serde(skip_serializing_if = "Patch::is_untouched")]
    pub scope_summary: Patch<String>,
    /// Set, cleared or untouched.
    #[serde(skip_serializing_if = "Patch::is_untouched")]
    pub competitor_notes: Patch<String>,
    /// Set, cleared or untouched.
    #[serde(skip_serializing_if = "Patch::is_untouched")]
    pub win_loss_reason: Patch<String>,
    /// Set, cleared or untouched.
    #[serde(skip_serializing_if = "Patch::is_untouched")]
    pub next_step_description: Patch<String>,
    /// Set, cleared or untouched.
    #[serde(skip_serializing_if = "Patch::is_untouched")]
    pub next_step_date: Patch<DateTime<Utc>>,
    /// Set, cleared or untouched.
    #[serde(skip_serializing_if = "Patch::is_untouched")]
    pub bid_due_date: Patch<DateTime<Utc>>,
    /// Set, cleared or untouched.
    #[serde(skip_serializing_if = "Patch::is_untouched")]
    pub priority: Patch<Priority>,
    /// Set, cleared or untouched (moving `stage` away from `lost` clears it unless named).
    #[serde(skip_serializing_if = "Patch::is_untouched")]
    pub lost_reason_category: Patch<LostReasonCategory>,
    /// Set, cleared or untouched.
    #[serde(skip_serializing_if = "Patch::is_untouched")]
    pub technical_requirements: Patch<String>,
    /// Set, cleared (back to the caller) or untouched.
    #[serde(skip_serializing_if = "Patch::is_untouched")]
    pub owner_user_id: Patch<Uuid>,
}

impl UpdateOpportunity {
    /// A change of `id` based on `expected_version`, with every field untouched.
    pub fn new(id: Uuid, expected_version: i32) -> Self {
        Self {
            id,
            expected_version,
            workspace_id: None,
            idempotency_key: None,
            customer_id: None,
            title: None,
            stage: None,
            pipeline_type: None,
            budget_confirmed: None,
            visibility_mode: None,
            primary_contact_id: Patch::Untouched,
            site_id: Patch::Untouched,
            source: Patch::Untouched,
            estimated_value: Patch::Untouched,
            expected_close_date: Patch::Untouched,
            probability: Patch::Untouched,
            solution_families: Patch::Untouched,
            scope_summary: Patch::Untouched,
            competitor_notes: Patch::Untouched,
            win_loss_reason: Patch::Untouched,
            next_step_description: Patch::Untouched,
            next_step_date: Patch::Untouched,
            bid_due_date: Patch::Untouched,
            priority: Patch::Untouched,
            lost_reason_category: Patch::Untouched,
            technical_requirements: Patch::Untouched,
            owner_user_id: Patch::Untouched,
        }
    }

    setters! {
        /// Sets `workspaceId` (W; it never moves the opportunity).
        workspace_id: Uuid,
        /// Sets the idempotency key instead of a generated one.
        idempotency_key: String,
        /// Sets `customerId`.
        customer_id: Uuid,
        /// Sets `title`.
        title: String,
        /// Sets `stage`.
        stage: Stage,
        /// Sets `pipelineType`.
        pipeline_type: PipelineType,
        /// Sets `budgetConfirmed`.
        budget_confirmed: bool,
        /// Sets `visibilityMode`.
        visibility_mode: VisibilityMode,
    }

    patch_setters! {
        /// Sets `primaryContactId`.
        primary_contact_id, clear_primary_contact_id: Uuid,
        /// Sets `siteId`.
        site_id, clear_site_id: Uuid,
        /// Sets `source`.
        source, clear_source: Source,
        /// Sets `estimatedValue`.
        estimated_value, clear_estimated_value: Money,
        /// Sets `expectedCloseDate`.
        expected_close_date, clear_expected_close_date: DateTime<Utc>,
        /// Sets `scopeSummary`.
        scope_summary, clear_scope_summary: String,
        /// Sets `competitorNotes`.
        competitor_notes, clear_competitor_notes: String,
        /// Sets `winLossReason`.
        win_loss_reason, clear_win_loss_reason: String,
        /// Sets `nextStepDescription`.
        next_step_description, clear_next_step_description: String,
        /// Sets `nextStepDate`.
        next_step_date, clear_next_step_date: DateTime<Utc>,
        /// Sets `bidDueDate`.
        bid_due_date, clear_bid_due_date: DateTime<Utc>,
        /// Sets `priority`.
        priority, clear_priority: Priority,
        /// Sets `lostReasonCategory`.
        lost_reason_category, clear_lost_reason_category: LostReasonCategory,
        /// Sets `technicalRequirements`.
        technical_requirements, clear_technical_requirements: String,
        /// Sets `ownerUserId` (clearing gives it back to the caller).
        owner_user_id, clear_owner_user_id: Uuid,
    }

    /// Sets `probability` (0–100).
    #[must_use]
    pub fn probability(mut self, value: u8) -> Self {
        self.probability = Patch::Set(value);
        self
    }

    /// Clears `probability` (sends `null`).
    #[must_use]
    pub fn clear_probability(mut self) -> Self {
        self.probability = Patch::Clear;
        self
    }

    /// Sets `solutionFamilies`.
    #[must_use]
    pub fn solution_families<S: Into<String>>(mut self, values: impl IntoIterator<Item = S>) -> Self {
        self.solution_families = Patch::Set(values.into_iter().map(Into::into).collect());
        self
    }

    /// Clears `solutionFamilies` to `[]` (sends `null`).
    #[must_use]
    pub fn clear_solution_families(mut self) -> Self {
        self.solution_families = Patch::Clear;
        self
    }
}

/// The params of `opportunity.get`. A [`Uuid`] converts into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GetOpportunity {
    /// The opportunity.
    pub id: Uuid,
    /// The workspace W.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<Uuid>,
}

impl GetOpportunity {
    /// The params for `id` in the default workspace.
    pub fn new(id: Uuid) -> Self {
        Self { id, workspace_id: None }
    }

    setters! {
        /// Sets `workspaceId`.
        workspace_id: Uuid,
    }
}

impl From<Uuid> for GetOpportunity {
    fn from(id: Uuid) -> Self {
        Self::new(id)
    }
}

/// The params of `opportunity.archive` and `opportunity.restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveOpportunity {
    /// The opportunity.
    pub id: Uuid,
    /// The `version` the change is based on.
    pub expected_version: i32,
    /// The workspace W.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<Uuid>,
    /// The idempotency key; the client makes a UUID v4 when it is left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// The params of `opportunity.restore`: the same as those of archive.
pub type RestoreOpportunity = ArchiveOpportunity;

impl ArchiveOpportunity {
    /// The params for `id` at `expected_version`.
    pub fn new(id: Uuid, expected_version: i32) -> Self {
        Self { id, expected_version, workspace_id: None, idempotency_key: None }
    }

    setters! {
        /// Sets `workspaceId`.
        workspace_id: Uuid,
        /// Sets the idempotency key instead of a generated one.
        idempotency_key: String,
    }
}

/// The params of `opportunity.list`; every field optional (`ListOpportunities::default()`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListOpportunities {
    /// The workspace W.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<Uuid>,
    /// `own` (default) or `visible`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include: Option<Include>,
    /// Any of these stages (`[]` matches nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<Vec<Stage>>,
    /// Any of these pipeline types.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_type: Option<Vec<PipelineType>>,
    /// Any of these priorities.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<Vec<Priority>>,
    /// Any of these sources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Vec<Source>>,
    /// Equal customer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<Uuid>,
    /// Equal owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_user_id: Option<Uuid>,
    /// Equal site.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site_id: Option<Uuid>,
    /// Closed (`won`/`lost`) or not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_closed: Option<bool>,
    /// `exclude` (default), `only` or `include`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived: Option<Archived>,
    /// `expectedCloseDate` ≥ it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_close_from: Option<DateTime<Utc>>,
    /// `expectedCloseDate` < it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_close_to: Option<DateTime<Utc>>,
    /// `updatedAt` ≥ it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_since: Option<DateTime<Utc>>,
    /// Case-insensitive literal substring of `title`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title_contains: Option<String>,
    /// The ordering field (`createdAt` by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_by: Option<OrderBy>,
    /// `desc` (default) or `asc`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<Order>,
    /// 1–200 items per page (50 by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

impl ListOpportunities {
    /// Every param left out: the first page of W's own unarchived opportunities, newest first.
    pub fn new() -> Self {
        Self::default()
    }

    setters! {
        /// Sets `workspaceId`.
        workspace_id: Uuid,
        /// Sets `include`.
        include: Include,
        /// Sets `customerId`.
        customer_id: Uuid,
        /// Sets `ownerUserId`.
        owner_user_id: Uuid,
        /// Sets `siteId`.
        site_id: Uuid,
        /// Sets `isClosed`.
        is_closed: bool,
        /// Sets `archived`.
        archived: Archived,
        /// Sets `expectedCloseFrom`.
        expected_close_from: DateTime<Utc>,
        /// Sets `expectedCloseTo`.
        expected_close_to: DateTime<Utc>,
        /// Sets `updatedSince`.
        updated_since: DateTime<Utc>,
        /// Sets `titleContains`.
        title_contains: String,
        /// Sets `orderBy`.
        order_by: OrderBy,
        /// Sets `order`.
        order: Order,
        /// Sets `cursor` (the previous page's `nextCursor`).
        cursor: String,
    }

    exact_setters! {
        /// Sets `limit` (1–200).
        limit: u32,
    }

    list_setters! {
        /// Sets the `stage` filter.
        stage: Stage,
        /// Sets the `pipelineType` filter.
        pipeline_type: PipelineType,
        /// Sets the `priority` filter.
        priority: Priority,
        /// Sets the `source` filter.
        source: Source,
    }
}

/// The params of `opportunity.changes`; every field optional.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Changes {
    /// The workspace W.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<Uuid>,
    /// `own` (default) or `visible`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include: Option<Include>,
    /// An `eventId` or `nextSince`: the events after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// 1–1000 (100 by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl Changes {
    /// Every param left out: the oldest kept events.
    pub fn new() -> Self {
        Self::default()
    }

    setters! {
        /// Sets `workspaceId`.
        workspace_id: Uuid,
        /// Sets `include`.
        include: Include,
        /// Sets `since`.
        since: String,
    }

    exact_setters! {
        /// Sets `limit` (1–1000).
        limit: u32,
    }
}

/// The params of `opportunity.subscribe`; every field optional.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscribe {
    /// The workspace W.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<Uuid>,
    /// `own` (default) or `visible`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include: Option<Include>,
    /// Replay the stored events after this `eventId` first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Only events whose opportunity has one of these stages after the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<Vec<Stage>>,
    /// Only events whose opportunity has one of these pipeline types after the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_type: Option<Vec<PipelineType>>,
    /// Only events whose opportunity has this owner after the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_user_id: Option<Uuid>,
}

impl Subscribe {
    /// Every param left out: W's own events from now on.
    pub fn new() -> Self {
        Self::default()
    }

    setters! {
        /// Sets `workspaceId`.
        workspace_id: Uuid,
        /// Sets `include`.
        include: Include,
        /// Sets `since`.
        since: String,
        /// Sets `ownerUserId`.
        owner_user_id: Uuid,
    }

    list_setters! {
        /// Sets the `stage` filter.
        stage: Stage,
        /// Sets the `pipelineType` filter.
        pipeline_type: PipelineType,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn update_sends_absent_null_and_values() {
        let id = Uuid::nil();
        let params = UpdateOpportunity::new(id, 2)
            .probability(60)
            .clear_next_step_date()
            .clear_owner_user_id()
            .clear_solution_families()
            .estimated_value(Money::from_cents(950_075));
        assert_eq!(
            serde_json::to_value(&params).unwrap(),
            json!({"id": id, "expectedVersion": 2, "probability": 60, "nextStepDate": null,
                   "ownerUserId": null, "solutionFamilies": null, "estimatedValue": 9500.75})
        );
        assert_eq!(
            serde_json::to_string(&UpdateOpportunity::new(id, 1).clear_estimated_value()).unwrap(),
            format!(r#"{{"id":"{id}","expectedVersion":1,"estimatedValue":null}}"#)
        );
    }

    #[test]
    fn create_leaves_out_what_is_not_set() {
        let params = CreateOpportunity::new(Uuid::nil(), "T", PipelineType::ServiceAgreement).solution_families(["a"]);
        assert_eq!(
            serde_json::to_value(&params).unwrap(),
            json!({"customerId": Uuid::nil(), "title": "T", "pipelineType": "service_agreement", "solutionFamilies": ["a"]})
        );
        let list = ListOpportunities::new().order_by(OrderBy::ExpectedCloseDate).stage([Stage::Won]).limit(2);
        assert_eq!(
            serde_json::to_value(&list).unwrap(),
            json!({"orderBy": "expectedCloseDate", "stage": ["won"], "limit": 2})
        );
    }
}

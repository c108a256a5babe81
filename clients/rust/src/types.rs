//! The values the service answers: enums, [`Opportunity`], pages and change events.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Money;

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[doc = $doc:literal])* $variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[doc = $doc])* #[serde(rename = $wire)] $variant),+
        }

        impl $name {
            /// Every value, in the order the API reference lists them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The value as it travels on the wire.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum! {
    /// Where an opportunity is in the sales pipeline (`stage`).
    Stage {
        /// `lead` (the default of a create).
        Lead = "lead",
        /// `qualified`.
        Qualified = "qualified",
        /// `survey`.
        Survey = "survey",
        /// `proposal`.
        Proposal = "proposal",
        /// `negotiation`.
        Negotiation = "negotiation",
        /// `won`: closed and won (probability 100).
        Won = "won",
        /// `lost`: closed and lost (probability 0).
        Lost = "lost",
    }
}

wire_enum! {
    /// The kind of work (`pipelineType`).
    PipelineType {
        /// `new_construction`.
        NewConstruction = "new_construction",
        /// `retrofit`.
        Retrofit = "retrofit",
        /// `service_agreement`.
        ServiceAgreement = "service_agreement",
        /// `expansion`.
        Expansion = "expansion",
        /// `other`.
        Other = "other",
    }
}

wire_enum! {
    /// Where the opportunity came from (`source`).
    Source {
        /// `referral`.
        Referral = "referral",
        /// `website`.
        Website = "website",
        /// `cold_call`.
        ColdCall = "cold_call",
        /// `existing_customer`.
        ExistingCustomer = "existing_customer",
        /// `partner`.
        Partner = "partner",
        /// `trade_show`.
        TradeShow = "trade_show",
        /// `portal_request`.
        PortalRequest = "portal_request",
        /// `other`.
        Other = "other",
    }
}

wire_enum! {
    /// How urgent the opportunity is (`priority`).
    Priority {
        /// `low`.
        Low = "low",
        /// `medium`.
        Medium = "medium",
        /// `high`.
        High = "high",
        /// `urgent`.
        Urgent = "urgent",
    }
}

wire_enum! {
    /// Why an opportunity was lost (`lostReasonCategory`, only with stage `lost`).
    LostReasonCategory {
        /// `price`.
        Price = "price",
        /// `timing`.
        Timing = "timing",
        /// `competitor`.
        Competitor = "competitor",
        /// `scope_mismatch`.
        ScopeMismatch = "scope_mismatch",
        /// `no_decision`.
        NoDecision = "no_decision",
        /// `relationship`.
        Relationship = "relationship",
        /// `other`.
        Other = "other",
    }
}

wire_enum! {
    /// Who may read and change an opportunity (`visibilityMode`).
    VisibilityMode {
        /// `workspace_local` (the default): its own workspace only.
        WorkspaceLocal = "workspace_local",
        /// `shared`: readable from every workspace.
        Shared = "shared",
        /// `global`: readable everywhere, changeable elsewhere with `opportunity:global`.
        Global = "global",
    }
}

wire_enum! {
    /// Which opportunities a reader sees (`include` of list, changes and subscribe).
    Include {
        /// `own` (the default): the workspace's own opportunities.
        Own = "own",
        /// `visible`: also the shared and global ones of other workspaces.
        Visible = "visible",
    }
}

wire_enum! {
    /// How `opportunity.list` treats archived opportunities (`archived`).
    Archived {
        /// `exclude` (the default): leave them out.
        Exclude = "exclude",
        /// `only`: list only archived ones.
        Only = "only",
        /// `include`: list them with the others.
        Include = "include",
    }
}

wire_enum! {
    /// The ordering field of `opportunity.list` (`orderBy`).
    OrderBy {
        /// `createdAt` (the default).
        CreatedAt = "createdAt",
        /// `updatedAt`.
        UpdatedAt = "updatedAt",
        /// `expectedCloseDate` (nulls last).
        ExpectedCloseDate = "expectedCloseDate",
        /// `estimatedValue` (nulls last).
        EstimatedValue = "estimatedValue",
    }
}

wire_enum! {
    /// The direction of `opportunity.list` (`order`).
    Order {
        /// `desc` (the default).
        Desc = "desc",
        /// `asc`.
        Asc = "asc",
    }
}

wire_enum! {
    /// What kind of change an event records (`type`).
    EventType {
        /// `created`.
        Created = "created",
        /// `updated`.
        Updated = "updated",
        /// `archived`.
        Archived = "archived",
        /// `restored`.
        Restored = "restored",
    }
}

/// An opportunity as every method answers it (`docs/api.md`, "The opportunity").
///
/// Unknown members are ignored, so that a newer service with more fields still parses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Opportunity {
    /// UUID v7, made by the service.
    pub id: Uuid,
    /// The workspace it belongs to; never changes.
    pub workspace_id: Uuid,
    /// The customer.
    pub customer_id: Uuid,
    /// The primary contact, if set.
    pub primary_contact_id: Option<Uuid>,
    /// The site, if set.
    pub site_id: Option<Uuid>,
    /// Trimmed, 1–200 characters.
    pub title: String,
    /// The pipeline stage.
    pub stage: Stage,
    /// The kind of work.
    pub pipeline_type: PipelineType,
    /// Where it came from, if set.
    pub source: Option<Source>,
    /// The estimated value, exact.
    pub estimated_value: Option<Money>,
    /// The expected close date, if set.
    pub expected_close_date: Option<DateTime<Utc>>,
    /// 0–100, if set.
    pub probability: Option<u8>,
    /// `[]` when unset.
    pub solution_families: Vec<String>,
    /// Free text, if set.
    pub scope_summary: Option<String>,
    /// Free text, if set.
    pub competitor_notes: Option<String>,
    /// Free text, if set.
    pub win_loss_reason: Option<String>,
    /// Free text, if set.
    pub next_step_description: Option<String>,
    /// When the next step is due, if set.
    pub next_step_date: Option<DateTime<Utc>>,
    /// When the bid is due, if set.
    pub bid_due_date: Option<DateTime<Utc>>,
    /// Whether the budget is confirmed.
    pub budget_confirmed: bool,
    /// The priority, if set.
    pub priority: Option<Priority>,
    /// Why it was lost, if set (only with stage `lost`).
    pub lost_reason_category: Option<LostReasonCategory>,
    /// Free text, if set.
    pub technical_requirements: Option<String>,
    /// The owner (by default the creating caller).
    pub owner_user_id: Uuid,
    /// Who may read and change it.
    pub visibility_mode: VisibilityMode,
    /// The `sub` of the caller who created it.
    pub created_by: Uuid,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed; never goes back.
    pub updated_at: DateTime<Utc>,
    /// 1 on a create, one higher with every change.
    pub version: i32,
    /// `stage` is `won` or `lost`.
    pub is_closed: bool,
    /// `stage` is `won`.
    pub is_won: bool,
    /// When it was archived; `None` unless archived.
    pub archived_at: Option<DateTime<Utc>>,
}

/// A page of `opportunity.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpportunityPage {
    /// The opportunities of this page, in the query's order.
    pub items: Vec<Opportunity>,
    /// The cursor of the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// One change of one opportunity, from `opportunity.changes` or `opportunity.changed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpportunityEvent {
    /// The event's position in the feed: 20 decimal digits; opaque, pass it back as `since`.
    pub event_id: String,
    /// What kind of change.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// When the change was made (the opportunity's `updatedAt` after it).
    pub occurred_at: DateTime<Utc>,
    /// The workspace the opportunity belongs to (not necessarily the reader's).
    pub workspace_id: Uuid,
    /// The `sub` of the caller who made the change.
    pub actor: Uuid,
    /// The opportunity after the change.
    pub opportunity: Opportunity,
}

/// A page of `opportunity.changes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangesPage {
    /// The events after `since`, oldest first.
    pub events: Vec<OpportunityEvent>,
    /// The `since` of the next call; never null.
    pub next_since: String,
}

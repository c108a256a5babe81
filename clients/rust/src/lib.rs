//! A typed client of opportunity-service's JSON-RPC API, over HTTP or WebSocket.
//!
//! ```no_run
//! use opportunity_client::{Client, CreateOpportunity, Money, PipelineType, Stage, UpdateOpportunity};
//! # async fn demo(token: &str, customer: uuid::Uuid) -> Result<(), opportunity_client::ClientError> {
//! let client = Client::http("http://127.0.0.1:8080/", token)?;
//! let created = client
//!     .create(
//!         CreateOpportunity::new(customer, "Chiller retrofit, Building C", PipelineType::Retrofit)
//!             .stage(Stage::Proposal)
//!             .estimated_value("125000.5".parse::<Money>().unwrap()),
//!     )
//!     .await?;
//! let updated = client.update(UpdateOpportunity::new(created.id, created.version).stage(Stage::Won)).await?;
//! assert_eq!(updated.probability, Some(100));
//! # Ok(()) }
//! ```
//!
//! - [`Client`] has one method per API method (`create`, `get`, `list`, `update`, `archive`,
//!   `restore`, `changes`, `subscribe`), taking the typed params of [`params`] and answering the
//!   typed values of [`types`].
//! - Writes carry an idempotency key (a UUID v4 per logical call unless given) that is kept
//!   across the client's retries ([`RetryPolicy`]).
//! - [`Client::subscribe`] resumes from the last event after a lost connection or a
//!   `slow_consumer` end ([`ReconnectPolicy`]).
//! - Errors are [`ClientError`]; the service's own errors expose its `data` members
//!   ([`RpcError`]).

mod client;
pub mod error;
mod money;
pub mod params;
pub mod types;

pub use client::{Client, MAX_RESPONSE_BYTES, ReconnectPolicy, RetryPolicy};
pub use error::{ClientError, RpcError};
pub use money::{Money, MoneyParseError};
pub use params::{
    ArchiveOpportunity, Changes, CreateOpportunity, GetOpportunity, ListOpportunities, Patch, RestoreOpportunity,
    Subscribe, UpdateOpportunity,
};
pub use types::{
    Archived, ChangesPage, EventType, Include, LostReasonCategory, Opportunity, OpportunityEvent, OpportunityPage,
    Order, OrderBy, PipelineType, Priority, Source, Stage, VisibilityMode,
};
pub use uuid::Uuid;

/// The README's example, compiled as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

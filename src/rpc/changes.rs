//! Following changes (CONTRACT.md §9): `opportunity.changes` pages through the stored events;
//! `opportunity.subscribe` replays them from a `since` and then delivers live ones as
//! `opportunity.changed` notifications on the WebSocket, until `opportunity.unsubscribe`.
//!
//! A subscription forwards through a bounded queue of [`MAX_UNDELIVERED`] events: a subscriber
//! that falls that far behind is ended with a `slow_consumer` error naming where to resume, and
//! never makes the service buffer more. It ends with `UNAUTHORIZED` when its token expires.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use jsonrpsee::core::SubscriptionError;
use jsonrpsee::{Extensions, PendingSubscriptionSink, RpcModule, SubscriptionMessage};
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

use super::caller::{self, Access};
use super::opportunity::db_failure;
use super::params::{self, FieldReader};
use super::{AppState, RequestId};
use crate::auth::LEEWAY_SECONDS;
use crate::db::events::{self, Event, Reader, event_id, parse_event_id};
use crate::domain::opportunity::{PipelineType, Stage};
use crate::error::ApiError;
use crate::http::CallContext;

/// The dotted method names.
pub const CHANGES: &str = "opportunity.changes";
pub const SUBSCRIBE: &str = "opportunity.subscribe";
pub const CHANGED: &str = "opportunity.changed";
pub const UNSUBSCRIBE: &str = "opportunity.unsubscribe";

/// A subscriber with more undelivered events than this is ended (`slow_consumer`).
pub const MAX_UNDELIVERED: usize = 1000;
/// The most subscriptions on one connection.
pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: u32 = 16;
/// jsonrpsee's own limit of subscriptions on one connection, counted from the call's start
/// (before its params are read): a backstop above [`MAX_SUBSCRIPTIONS_PER_CONNECTION`], which
/// the handler checks after the params and the workspace, as §4 orders the checks (a 17th
/// subscribe with bad params is BAD_REQUEST, not CONFLICT). Only a client with more than this
/// many subscribe calls in flight at once meets it, and gets the same CONFLICT.
pub const SUBSCRIBE_CALLS_PER_CONNECTION: u32 = 2 * MAX_SUBSCRIPTIONS_PER_CONNECTION;

/// How long a subscribe waits for a place on its connection when all are taken: an
/// unsubscribe is answered before the subscription it ends has given its place back, and a
/// client that subscribes right after must not be refused for that.
const SLOT_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Takes a place among the connection's [`MAX_SUBSCRIPTIONS_PER_CONNECTION`] (`places`), given
/// back when the permit is dropped, or refuses with CONFLICT `too_many_subscriptions`.
async fn take_place(places: &Arc<tokio::sync::Semaphore>) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    let place = match places.clone().try_acquire_owned() {
        Ok(place) => Some(place),
        Err(_) => tokio::time::timeout(SLOT_WAIT, places.clone().acquire_owned()).await.ok().and_then(Result::ok),
    };
    match place {
        Some(place) => Ok(place),
        None => Err(ApiError::Conflict {
            message: format!(
                "at most {MAX_SUBSCRIPTIONS_PER_CONNECTION} subscriptions per connection; unsubscribe one first"
            ),
            reason: Some("too_many_subscriptions"),
            retryable: false,
            current_version: None,
        }),
    }
}

/// Events a replay from `since` reads at a time.
const REPLAY_PAGE: i64 = 64;
/// A replay reads its next page once at most this many of its events wait for the subscriber.
const REPLAY_AHEAD: usize = 32;
/// The most opportunity JSON a page of `opportunity.changes` holds: a page of large
/// opportunities holds fewer events than its `limit` (at least one), its `nextSince` the last
/// of them, so that it stays within `MAX_RESPONSE_BYTES` and the memory of a call is bounded.
pub const PAGE_BYTES: i64 = 4 * 1024 * 1024;
/// The default and largest page of `opportunity.changes`.
pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;

/// `include`: `"own"` (false) or `"visible"` (true).
fn include(raw: &RawValue) -> Result<bool, String> {
    params::one_of(super::list::INCLUDE_VALUES, |s| match s {
        "own" => Some(false),
        "visible" => Some(true),
        _ => None,
    })(raw)
}

/// `since`: an event id in the form this service issues.
fn since(raw: &RawValue) -> Result<i64, String> {
    let text = params::string(raw).map_err(|_| "must be an eventId string".to_string())?;
    parse_event_id(&text).ok_or_else(|| NEVER_ISSUED.to_string())
}

const NEVER_ISSUED: &str = "is not an eventId this service issued";

/// One enum value or an array of them; `None` matches all.
fn enum_filter(
    reader: &mut FieldReader<'_>,
    field: &str,
    values: &'static [&'static str],
) -> Option<Vec<&'static str>> {
    let raw = reader.optional(field, Ok)?;
    let one = |raw: &RawValue| values.iter().copied().find(|v| params::string(raw).is_ok_and(|s| s == *v));
    if let Some(v) = one(raw) {
        return Some(vec![v]);
    }
    let message = format!("must be one of, or an array of: {}", values.join(", "));
    match serde_json::from_str::<Vec<&RawValue>>(raw.get()) {
        Ok(items) if items.len() <= params::max_filter_items(values) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match one(item) {
                    Some(v) => out.push(v),
                    None => {
                        reader.failure.field(format!("{field}.{i}"), format!("must be one of: {}", values.join(", ")))
                    }
                }
            }
            Some(out)
        }
        Ok(_) => {
            let most = params::max_filter_items(values);
            reader.failure.field(field, format!("must have at most {most} items"));
            None
        }
        Err(_) => {
            reader.failure.field(field, message);
            None
        }
    }
}

/// What a reader of the feed asked for, checked.
#[derive(Debug, Clone)]
struct Follow {
    reader: Reader,
    since: Option<i64>,
    stages: Option<Vec<&'static str>>,
    pipeline_types: Option<Vec<&'static str>>,
    owner_user_id: Option<Uuid>,
}

impl Follow {
    /// Whether a live event is for this reader.
    fn wants(&self, e: &Event) -> bool {
        (e.workspace_id == self.reader.workspace || (self.reader.visible && e.visible_elsewhere))
            && self.stages.as_ref().is_none_or(|s| s.contains(&e.stage.as_str()))
            && self.pipeline_types.as_ref().is_none_or(|p| p.contains(&e.pipeline_type.as_str()))
            && self.owner_user_id.is_none_or(|o| o == e.owner_user_id)
    }
}

/// Reads the params of `opportunity.changes` or `opportunity.subscribe`, every problem at once
/// (a `since` past the feed's head among them: it was never issued), then the workspace grant.
async fn read_follow(
    state: &AppState,
    params: Option<&str>,
    context: Option<&CallContext>,
    principal: &crate::auth::Principal,
    fields: &[String],
    request_id: Uuid,
) -> Result<(Follow, Option<i64>), ApiError> {
    let mut reader = FieldReader::new(params);
    reader.refuse_unknown(fields);
    let visible = reader.optional("include", include).unwrap_or(false);
    let since = reader.optional("since", since);
    if let Some(position) = since {
        let issued =
            state.feed.was_issued(&state.db, position).await.map_err(|e| db_failure(e, request_id, &state.metrics))?;
        if !issued {
            reader.failure.field("since", NEVER_ISSUED);
        }
    }
    let mut limit = None;
    let (mut stages, mut pipeline_types, mut owner_user_id) = (None, None, None);
    if fields.iter().any(|f| f == "limit") {
        limit = reader.optional("limit", params::integer).and_then(|l| {
            if (1..=MAX_LIMIT).contains(&l) {
                Some(l)
            } else {
                reader.failure.field("limit", format!("must be between 1 and {MAX_LIMIT}"));
                None
            }
        });
    } else {
        stages = enum_filter(&mut reader, "stage", Stage::VALUES);
        pipeline_types = enum_filter(&mut reader, "pipelineType", PipelineType::VALUES);
        owner_user_id = reader.optional("ownerUserId", params::uuid);
    }
    let named = caller::named_workspace(&mut reader, context);
    let workspace = caller::workspace(principal, named, reader.failure)?;
    let follow = Follow { reader: Reader { workspace, visible }, since, stages, pipeline_types, owner_user_id };
    Ok((follow, limit))
}

fn expired() -> ApiError {
    ApiError::Conflict {
        message:
            "events after this since are no longer kept (EVENT_RETENTION); list afresh and follow from the newest event"
                .into(),
        reason: Some("events_expired"),
        retryable: false,
        current_version: None,
    }
}

/// Refuses a `since` whose events are gone (one never issued was refused with the params).
fn check_since(since: Option<i64>, purged_through: i64) -> Result<(), ApiError> {
    match since {
        Some(s) if s < purged_through => Err(expired()),
        _ => Ok(()),
    }
}

/// `opportunity.changes`.
pub async fn changes(
    state: &AppState,
    params: Option<&str>,
    context: Option<&CallContext>,
    request_id: Uuid,
) -> Result<Box<RawValue>, ApiError> {
    let principal = caller::principal(context, Access::Read)?;
    let (follow, limit) =
        read_follow(state, params, context, principal, &super::wire::CHANGES_FIELDS, request_id).await?;
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    let reader = follow.reader;
    let since = follow.since;
    let page = state
        .db
        .run(move |conn| events::page_within(conn, since, Some(reader), limit, PAGE_BYTES))
        .await
        .map_err(|e| db_failure(e, request_id, &state.metrics))?;
    check_since(since, page.purged_through)?;
    let next = match (page.events.last(), since) {
        (Some(last), _) => last.position,
        (None, Some(s)) => s,
        (None, None) => page.head,
    };
    let events: Vec<&RawValue> = page.events.iter().map(|e| &*e.json).collect();
    let page = super::wire::ChangesPage { events, next_since: event_id(next) };
    Ok(super::wire::answer(&page))
}

/// A final `opportunity.changed` notification: an error object of §4 with `resumeFrom`.
fn ending(error: ApiError, resume_from: i64) -> SubscriptionError {
    let mut object = serde_json::to_value(error.into_error_object()).expect("an error object serializes");
    object["data"]["resumeFrom"] = json!(event_id(resume_from));
    SubscriptionError::from_json(serde_json::value::to_raw_value(&object).expect("serializes"))
}

/// An event waiting for the subscriber, and whether it came live (not replayed from `since`).
struct Queued {
    event: Arc<Event>,
    live: bool,
}

/// Why the producing half of a subscription stopped.
enum Stop {
    /// The subscriber went away.
    Gone,
    /// More than [`MAX_UNDELIVERED`] events wait.
    Slow,
    /// The database could not be read.
    Failed(String),
}

/// Reads from the database what a subscriber missed after `seen`, queueing what it wants.
/// `pace`: wait for room in the queue (a replay from `since`) instead of ending a subscriber
/// that falls behind. Returns the position everything has been looked at through.
async fn catch_up(
    state: &AppState,
    follow: &Follow,
    mut seen: i64,
    queue: &mpsc::Sender<Queued>,
    pace: bool,
) -> Result<i64, Stop> {
    // A replay reads ahead of its subscriber by a few events only: each replaying subscription
    // holds its own copies (live events are shared), so one that is not read must not hold a
    // thousand of them.
    let limit = if pace { REPLAY_PAGE } else { crate::feed::PAGE };
    loop {
        if pace {
            let _room = queue.reserve_many(MAX_UNDELIVERED - REPLAY_AHEAD).await.map_err(|_| Stop::Gone)?;
        }
        let reader = follow.reader;
        let page = state
            .db
            .run(move |conn| events::page(conn, Some(seen), Some(reader), limit))
            .await
            .map_err(|e| Stop::Failed(e.to_string()))?;
        if seen < page.purged_through {
            return Err(Stop::Slow);
        }
        let full = page.events.len() as i64 == limit;
        let through = if full { page.events.last().map_or(page.head, |e| e.position) } else { page.head };
        for event in page.events {
            if follow.wants(&event) {
                enqueue(queue, Arc::new(event), pace).await?;
            }
        }
        seen = through;
        if !full {
            return Ok(seen);
        }
    }
}

async fn enqueue(queue: &mpsc::Sender<Queued>, event: Arc<Event>, pace: bool) -> Result<(), Stop> {
    if pace {
        return queue.send(Queued { event, live: false }).await.map_err(|_| Stop::Gone);
    }
    queue.try_send(Queued { event, live: true }).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => Stop::Slow,
        mpsc::error::TrySendError::Closed(_) => Stop::Gone,
    })
}

/// The producing half: the replay, then live batches, queued for the sending half.
async fn produce(
    state: &AppState,
    follow: &Follow,
    start: i64,
    mut live: broadcast::Receiver<Arc<crate::feed::Batch>>,
    queue: mpsc::Sender<Queued>,
) -> Stop {
    let mut seen = start;
    if follow.since.is_some() {
        match catch_up(state, follow, seen, &queue, true).await {
            Ok(s) => seen = s,
            Err(stop) => return stop,
        }
    }
    loop {
        let batch = match live.recv().await {
            Ok(batch) => batch,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                match catch_up(state, follow, seen, &queue, false).await {
                    Ok(s) => seen = s,
                    Err(stop) => return stop,
                }
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return Stop::Failed("the feed stopped".into()),
        };
        if batch.through <= seen {
            continue;
        }
        if batch.after > seen {
            // A gap between what was read and this batch: read it from the database.
            match catch_up(state, follow, seen, &queue, false).await {
                Ok(s) => seen = s,
                Err(stop) => return stop,
            }
            if batch.through <= seen {
                continue;
            }
        }
        for event in &batch.events {
            if event.position > seen
                && follow.wants(event)
                && let Err(stop) = enqueue(&queue, event.clone(), false).await
            {
                return stop;
            }
        }
        seen = batch.through;
    }
}

/// Runs an accepted subscription until it ends; the error, if any, is its final notification.
async fn run(
    state: Arc<AppState>,
    sink: jsonrpsee::SubscriptionSink,
    follow: Follow,
    start: i64,
    live: broadcast::Receiver<Arc<crate::feed::Batch>>,
    expires_at: i64,
) -> Result<(), SubscriptionError> {
    let (queue, mut undelivered) = mpsc::channel::<Queued>(MAX_UNDELIVERED);
    let delivered = AtomicI64::new(start);
    let metrics = state.metrics.clone();
    let send = async {
        while let Some(Queued { event, live }) = undelivered.recv().await {
            let message: SubscriptionMessage = event.json.clone().into();
            if sink.send(message).await.is_err() {
                return;
            }
            delivered.store(event.position, Ordering::Relaxed);
            // A replay from an old `since` is not lag.
            metrics.observe_event_delivered(live.then_some(event.occurred_at));
        }
    };
    let expiry = {
        // The instant a call with this token is refused (`Principal::is_expired`), to the ms.
        let end_ms = expires_at.saturating_add(LEEWAY_SECONDS as i64).saturating_mul(1000);
        let left = end_ms.saturating_sub(chrono::Utc::now().timestamp_millis()).max(0);
        tokio::time::Instant::from_std(Instant::now()) + std::time::Duration::from_millis(left as u64)
    };
    let ended = tokio::select! {
        stop = produce(&state, &follow, start, live, queue) => Some(stop),
        () = send => None,
        () = sink.closed() => None,
        () = tokio::time::sleep_until(expiry) => {
            let resume = delivered.load(Ordering::Relaxed);
            return Err(ending(ApiError::Unauthorized("the token has expired; subscribe again with a new token".into()), resume));
        }
    };
    let resume = delivered.load(Ordering::Relaxed);
    match ended {
        Some(Stop::Slow) => {
            metrics.observe_slow_consumer();
            Err(ending(
                ApiError::Conflict {
                    message: format!("more than {MAX_UNDELIVERED} events were waiting; resume with since = resumeFrom"),
                    reason: Some("slow_consumer"),
                    retryable: true,
                    current_version: None,
                },
                resume,
            ))
        }
        Some(Stop::Failed(cause)) => {
            let request_id = Uuid::now_v7();
            tracing::warn!(%request_id, cause, "a subscription ended: the database could not be read");
            Err(ending(ApiError::Unavailable { request_id }, resume))
        }
        Some(Stop::Gone) | None => Ok(()),
    }
}

/// Registers `opportunity.changes` and the subscription methods.
pub fn register(module: &mut RpcModule<AppState>) -> anyhow::Result<()> {
    module.register_async_method(CHANGES, |params, state, extensions: Extensions| async move {
        let request_id = extensions.get::<RequestId>().map_or_else(Uuid::now_v7, |r| r.0);
        changes(&state, params.as_str(), extensions.get::<CallContext>(), request_id)
            .await
            .map_err(ApiError::into_error_object)
    })?;
    module.register_subscription(
        SUBSCRIBE,
        CHANGED,
        UNSUBSCRIBE,
        |params, pending: PendingSubscriptionSink, state: Arc<AppState>, extensions: Extensions| async move {
            let request_id = extensions.get::<RequestId>().map_or_else(Uuid::now_v7, |r| r.0);
            let context = extensions.get::<CallContext>();
            let prepared = async {
                let principal = caller::principal(context, Access::Read)?;
                let (follow, _) = read_follow(
                    &state,
                    params.as_str(),
                    context,
                    principal,
                    &super::wire::SUBSCRIBE_FIELDS,
                    request_id,
                )
                .await?;
                // Live batches from before the head is read: nothing falls between the two.
                let live = state.feed.subscribe();
                let page = state
                    .db
                    .run(|conn| events::page(conn, None, None, 0))
                    .await
                    .map_err(|e| db_failure(e, request_id, &state.metrics))?;
                check_since(follow.since, page.purged_through)?;
                let start = follow.since.unwrap_or(page.head);
                // The connection's limit, last (§4: a CONFLICT after the params and the
                // workspace); over HTTP the params check has refused already.
                let slot = match context.and_then(|c| c.subscriptions.as_ref()) {
                    Some(places) => Some(take_place(places).await?),
                    None => None,
                };
                Ok::<_, ApiError>((follow, start, live, principal.expires_at, slot))
            };
            let (follow, start, live, expires_at, _slot) = match prepared.await {
                Ok(prepared) => prepared,
                Err(e) => {
                    pending.reject(e.into_error_object()).await;
                    return Ok(());
                }
            };
            let accepting = context.and_then(|c| c.accepting.as_ref()).map(crate::compat::Accepting::start);
            let Ok(sink) = pending.accept().await else { return Ok(()) };
            drop(accepting);
            let _live = state.metrics.subscription_started();
            run(state.clone(), sink, follow, start, live, expires_at).await
        },
    )?;
    Ok(())
}
